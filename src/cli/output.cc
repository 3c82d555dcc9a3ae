#include "cli/output.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdio>

namespace kiln::cli {

int Print(const Result<Reply>& reply, bool json,
          const std::function<void(const rapidjson::Document&)>& pretty) {
  // With --json a failure is JSON on stdout too, for scripts: the server's
  // reply when it is JSON, else {"msg": ...}.
  if (!reply) {
    std::fprintf(stderr, "kiln: %s\n", reply.error().message().c_str());
    if (json) std::printf("{\"msg\":%s}\n", JsonString(reply.error().message()).c_str());
    return 2;
  }
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(reply->body.c_str());
  bool ok = reply->status >= 200 && reply->status < 300;
  if (!ok) {
    std::string msg = *Str(d, "msg") ? Str(d, "msg") : reply->body;
    std::fprintf(stderr, "kiln: %d %s\n", reply->status, msg.c_str());
    if (json) {
      if (d.HasParseError())
        std::printf("{\"msg\":%s}\n", JsonString(msg).c_str());
      else
        std::printf("%s\n", reply->body.c_str());
    }
    return 1;
  }
  if (json || d.HasParseError()) {
    std::printf("%s\n", reply->body.c_str());
  } else {
    pretty(d);
  }
  return 0;
}

std::string JsonString(const std::string& s) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  return sb.GetString();
}

const rapidjson::Value& Field(const rapidjson::Value& o, const char* key) {
  static const rapidjson::Value null;
  if (!o.IsObject()) return null;
  auto it = o.FindMember(key);
  return it == o.MemberEnd() ? null : it->value;
}

bool Has(const rapidjson::Value& o, const char* key) { return !Field(o, key).IsNull(); }

const char* Str(const rapidjson::Value& o, const char* key) {
  const auto& v = Field(o, key);
  return v.IsString() ? v.GetString() : "";
}

int64_t Int(const rapidjson::Value& o, const char* key) {
  const auto& v = Field(o, key);
  if (v.IsInt64()) return v.GetInt64();
  if (v.IsUint64()) return static_cast<int64_t>(v.GetUint64());
  return 0;
}

bool Bool(const rapidjson::Value& o, const char* key) {
  const auto& v = Field(o, key);
  return v.IsBool() && v.GetBool();
}

rapidjson::Value::ConstArray Array(const rapidjson::Value& o, const char* key) {
  static const rapidjson::Value empty(rapidjson::kArrayType);
  const auto& v = Field(o, key);
  return v.IsArray() ? v.GetArray() : empty.GetArray();
}

}  // namespace kiln::cli
