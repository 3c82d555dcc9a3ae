#include "api/json.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace kiln::api {
namespace {
Error WrongType(const char* key, const char* want) {
  return Error::InvalidArgument(std::string(key) + " must be " + want);
}
}  // namespace

Result<JsonBody> ParseObject(const std::string& body) {
  JsonBody out;
  auto& d = out.state_->doc;
  size_t i = body.find_first_not_of(" \t\r\n");
  if (i == std::string::npos) {
    d.SetObject();
    return out;
  }
  d.Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());
  if (d.HasParseError()) return Fail(Error::InvalidArgument("Invalid JSON"));
  if (!d.IsObject()) return Fail(Error::InvalidArgument("Request body must be a JSON object"));
  return out;
}

Result<std::optional<int64_t>> GetInt(const JsonValue& obj, const char* key) {
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd() || it->value.IsNull()) return std::nullopt;
  const auto& v = it->value;
  if (v.IsInt64()) return v.GetInt64();
  if (v.IsDouble()) {
    double d = v.GetDouble();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15)
      return static_cast<int64_t>(d);
  }
  return Fail(WrongType(key, "an integer"));
}

bool NestsWithin(const JsonValue& v, int max_depth) {
  std::vector<std::pair<const JsonValue*, int>> todo{{&v, 1}};
  while (!todo.empty()) {
    auto [x, depth] = todo.back();
    todo.pop_back();
    if (!x->IsObject() && !x->IsArray()) continue;
    if (depth > max_depth) return false;
    if (x->IsObject())
      for (const auto& m : x->GetObject()) todo.emplace_back(&m.value, depth + 1);
    else
      for (const auto& e : x->GetArray()) todo.emplace_back(&e, depth + 1);
  }
  return true;
}

Result<int> NarrowInt(const char* key, int64_t v) {
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    return Fail(Error::InvalidArgument(std::string(key) + " is out of range"));
  return static_cast<int>(v);
}

Result<std::optional<std::string>> GetString(const JsonValue& obj, const char* key) {
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd() || it->value.IsNull()) return std::nullopt;
  if (!it->value.IsString()) return Fail(WrongType(key, "a string"));
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

Result<std::optional<bool>> GetBool(const JsonValue& obj, const char* key) {
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd() || it->value.IsNull()) return std::nullopt;
  if (!it->value.IsBool()) return Fail(WrongType(key, "true or false"));
  return it->value.GetBool();
}

Result<const JsonValue*> GetObject(const JsonValue& obj, const char* key) {
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd() || it->value.IsNull()) return nullptr;
  if (!it->value.IsObject()) return Fail(WrongType(key, "an object"));
  return &it->value;
}

Result<const JsonValue*> GetArray(const JsonValue& obj, const char* key) {
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd() || it->value.IsNull()) return nullptr;
  if (!it->value.IsArray()) return Fail(WrongType(key, "an array"));
  return &it->value;
}

Result<int64_t> ParseIntParam(const char* key, const std::string& v) {
  int64_t out = 0;
  auto r = std::from_chars(v.data(), v.data() + v.size(), out);
  if (v.empty() || r.ec != std::errc() || r.ptr != v.data() + v.size())
    return Fail(WrongType(key, "an integer"));
  return out;
}

std::string MsgJson(std::string_view text) {
  return Json([&](JsonWriter& w) {
    w.StartObject();
    w.Key("msg");
    WriteString(w, text);
    w.EndObject();
  });
}

}  // namespace kiln::api
