#include "cli/output.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdio>

namespace kiln::cli {

int Print(const Result<Reply>& reply, bool json,
          const std::function<void(const rapidjson::Document&)>& pretty) {
  if (!reply) {
    std::fprintf(stderr, "kiln: %s\n", reply.error().message().c_str());
    return 2;
  }
  rapidjson::Document d;
  d.Parse(reply->body.c_str());
  bool ok = reply->status >= 200 && reply->status < 300;
  if (!ok) {
    std::string msg = reply->body;
    if (!d.HasParseError() && d.IsObject() && d.HasMember("msg") && d["msg"].IsString())
      msg = d["msg"].GetString();
    std::fprintf(stderr, "kiln: %d %s\n", reply->status, msg.c_str());
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

}  // namespace kiln::cli
