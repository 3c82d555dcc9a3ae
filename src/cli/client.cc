#include "cli/client.h"

#include <rapidjson/document.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "base/url.h"

namespace kiln::cli {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Reads a key from iron.json: top level, or under "iron_mq" / "mq" / "iron".
std::string FromFile(const std::string& path, const char* key) {
  std::ifstream in(path);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  rapidjson::Document d;
  d.Parse(ss.str().c_str());
  if (d.HasParseError() || !d.IsObject()) return {};
  auto get = [&](const rapidjson::Value& o) -> std::string {
    auto it = o.FindMember(key);
    if (it == o.MemberEnd()) return {};
    if (it->value.IsString()) return it->value.GetString();
    if (it->value.IsInt()) return std::to_string(it->value.GetInt());
    return {};
  };
  if (auto v = get(d); !v.empty()) return v;
  for (const char* sub : {"iron_mq", "mq", "iron"}) {
    auto it = d.FindMember(sub);
    if (it != d.MemberEnd() && it->value.IsObject())
      if (auto v = get(it->value); !v.empty()) return v;
  }
  return {};
}

void Fill(std::string& field, const char* key, const char* env_mq, const char* env) {
  if (!field.empty()) return;
  if (field = Env(env_mq); !field.empty()) return;
  if (field = Env(env); !field.empty()) return;
  for (std::string dir : {std::string("."), Env("HOME")}) {
    if (dir.empty()) continue;
    for (const char* name : {"/iron.json", "/.iron.json"})
      if (field = FromFile(dir + name, key); !field.empty()) return;
  }
}

}  // namespace

Connection Resolve(Connection c) {
  Fill(c.scheme, "scheme", "IRON_MQ_SCHEME", "IRON_SCHEME");
  Fill(c.host, "host", "IRON_MQ_HOST", "IRON_HOST");
  Fill(c.port, "port", "IRON_MQ_PORT", "IRON_PORT");
  Fill(c.project_id, "project_id", "IRON_MQ_PROJECT_ID", "IRON_PROJECT_ID");
  Fill(c.token, "token", "IRON_MQ_TOKEN", "IRON_TOKEN");
  if (c.host.empty()) c.host = "127.0.0.1";
  if (c.port.empty()) c.port = "8080";
  return c;
}

std::string Escape(const std::string& s) { return PercentEncode(s); }

Result<Reply> Call(const Connection& c, const std::string& method, const std::string& target,
                   const std::string& body, const std::string& content_type) {
  if (c.scheme != "http")
    return Fail(Error::InvalidArgument("the CLI speaks http only (scheme " + c.scheme + ")"));
  try {
    asio::io_context ioc;
    asio::ip::tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(60));
    stream.connect(resolver.resolve(c.host, c.port));
    bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(method), target, 11};
    req.set(bhttp::field::host, c.host);
    req.set(bhttp::field::user_agent, "kiln-cli");
    if (!c.token.empty()) req.set(bhttp::field::authorization, "OAuth " + c.token);
    if (method != "GET") {
      req.set(bhttp::field::content_type, content_type);
      req.body() = body.empty() ? "{}" : body;
      req.prepare_payload();
    }
    bhttp::write(stream, req);
    beast::flat_buffer buf;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(1ULL << 30);  // code downloads
    bhttp::read(stream, buf, parser);
    auto& res = parser.get();
    beast::error_code ec;
    stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    return Reply{static_cast<int>(res.result_int()), res.body()};
  } catch (const std::exception& e) {
    return Fail(
        Error::Unavailable("cannot reach Kiln at " + c.host + ":" + c.port + ": " + e.what()));
  }
}

}  // namespace kiln::cli
