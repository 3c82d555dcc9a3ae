// JSON in and out of the API, over RapidJSON. Readers check types and turn
// every mismatch into InvalidArgument with the field's name. Include only in
// api/*.cc: RapidJSON is heavy. Thread-compatible.
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"

namespace kiln::api {

using JsonValue = rapidjson::Value;
using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// A parsed request body, read through its root object. Its nodes come from
// a small pool inside it, one allocation for a usual request, where a plain
// rapidjson::Document takes a 64 KiB chunk from malloc for every parse.
class JsonBody {
 public:
  const JsonValue& root() const { return state_->doc; }
  operator const JsonValue&() const { return root(); }  // NOLINT: reads like the root

 private:
  friend Result<JsonBody> ParseObject(const std::string& body);
  struct State {
    char buffer[2048];
    rapidjson::MemoryPoolAllocator<> pool{buffer, sizeof buffer};
    rapidjson::Document doc{&pool};
  };
  std::unique_ptr<State> state_ = std::make_unique<State>();
};

// Parses a request body; an empty body counts as {}. The root must be an object.
Result<JsonBody> ParseObject(const std::string& body);

// Optional members: absent or null gives nullopt; a wrong type is an error.
Result<std::optional<int64_t>> GetInt(const JsonValue& obj, const char* key);
Result<std::optional<std::string>> GetString(const JsonValue& obj, const char* key);
Result<std::optional<bool>> GetBool(const JsonValue& obj, const char* key);
// Object or array member; nullptr when absent or null.
Result<const JsonValue*> GetObject(const JsonValue& obj, const char* key);
Result<const JsonValue*> GetArray(const JsonValue& obj, const char* key);

// An integer from a query-string value; InvalidArgument names `key`.
Result<int64_t> ParseIntParam(const char* key, const std::string& v);

inline void WriteString(JsonWriter& w, std::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

// Builds a JSON text: Json([](JsonWriter& w) { w.StartObject(); ... }).
template <typename F>
std::string Json(F&& f) {
  rapidjson::StringBuffer sb;
  JsonWriter w(sb);
  f(w);
  return std::string(sb.GetString(), sb.GetSize());
}

// {"msg": text}
std::string MsgJson(std::string_view text);

}  // namespace kiln::api
