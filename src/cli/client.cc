#include "cli/client.h"

#include <openssl/ssl.h>
#include <rapidjson/document.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "base/url.h"

namespace kiln::cli {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;

namespace {

// Each step gets its own minute (KILN_CLI_TIMEOUT seconds), and a
// transfer a minute more for each stretch without progress: a large upload
// or download over a slow link is not cut, a server that stops answering
// still is. The steps run asynchronously: a tcp_stream's expiry only cuts
// asynchronous operations.
std::chrono::seconds Step() {
  const char* v = std::getenv("KILN_CLI_TIMEOUT");
  long n = v ? std::strtol(v, nullptr, 10) : 0;
  return std::chrono::seconds(n > 0 ? n : 60);
}

// Writes `req` and reads the answer over a connected stream (plain or TLS).
template <class Stream>
asio::awaitable<Reply> Exchange(Stream& stream, bhttp::request<bhttp::string_body>& req) {
  auto& tcp = beast::get_lowest_layer(stream);
  bhttp::request_serializer<bhttp::string_body> out(req);
  while (!out.is_done()) {
    tcp.expires_after(Step());
    co_await bhttp::async_write_some(stream, out, asio::use_awaitable);
  }
  beast::flat_buffer buf;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(1ULL << 30);  // code downloads
  while (!parser.is_done()) {
    tcp.expires_after(Step());
    co_await bhttp::async_read_some(stream, buf, parser, asio::use_awaitable);
  }
  auto& res = parser.get();
  co_return Reply{static_cast<int>(res.result_int()), res.body()};
}

// Connects to host:port over `scheme` and exchanges `req`.
asio::awaitable<Reply> Talk(std::string scheme, std::string host, std::string port,
                            bhttp::request<bhttp::string_body>& req) {
  auto ex = co_await asio::this_coro::executor;
  asio::ip::tcp::resolver resolver(ex);
  auto endpoints = co_await resolver.async_resolve(host, port, asio::use_awaitable);
  beast::tcp_stream tcp(ex);
  tcp.expires_after(Step());
  co_await tcp.async_connect(endpoints, asio::use_awaitable);
  beast::error_code ec;
  if (scheme == "http") {
    Reply reply = co_await Exchange(tcp, req);
    tcp.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    co_return reply;
  }
  // https: the server's certificate must chain to a CA this machine
  // trusts (OpenSSL's default paths, which SSL_CERT_FILE and SSL_CERT_DIR
  // override) and name the host; the token is never sent otherwise.
  ssl::context ctx{ssl::context::tls_client};
  ctx.set_default_verify_paths();
  ctx.set_verify_mode(ssl::verify_peer);
  beast::ssl_stream<beast::tcp_stream> tls(std::move(tcp), ctx);
  asio::ip::make_address(host, ec);
  if (ec && !SSL_set_tlsext_host_name(tls.native_handle(), host.c_str()))  // SNI names hosts only
    throw std::runtime_error("cannot set the TLS server name");
  tls.set_verify_callback(ssl::host_name_verification(host));
  beast::get_lowest_layer(tls).expires_after(Step());
  co_await tls.async_handshake(ssl::stream_base::client, asio::use_awaitable);
  // The answer is read whole (its framing says where it ends): the
  // connection is closed without waiting for the server's close_notify.
  co_return co_await Exchange(tls, req);
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Reads a key from an iron.json-style file. The first value found wins:
// under "iron_<p>", "iron" -> "<p>", "<p>", "iron", then at the top level
// (iron_core's order; <p> is mq or worker).
std::string FromFile(const std::string& path, const char* key, const std::string& p) {
  std::ifstream in(path);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(ss.str().c_str());
  if (d.HasParseError() || !d.IsObject()) return {};
  auto object = [](const rapidjson::Value& o, const std::string& name) -> const rapidjson::Value* {
    if (!o.IsObject()) return nullptr;
    auto it = o.FindMember(name.c_str());
    return it != o.MemberEnd() && it->value.IsObject() ? &it->value : nullptr;
  };
  auto get = [&](const rapidjson::Value* o) -> std::string {
    if (!o) return {};
    auto it = o->FindMember(key);
    if (it == o->MemberEnd()) return {};
    if (it->value.IsString()) return it->value.GetString();
    if (it->value.IsInt64()) return std::to_string(it->value.GetInt64());
    return {};
  };
  const rapidjson::Value* iron = object(d, "iron");
  for (const rapidjson::Value* o : {object(d, "iron_" + p), iron ? object(*iron, p) : nullptr,
                                    object(d, p), iron, static_cast<const rapidjson::Value*>(&d)})
    if (auto v = get(o); !v.empty()) return v;
  return {};
}

void Fill(std::string& field, const char* key, const std::string& opt, const std::string& p) {
  if (!field.empty()) return;
  std::string up = p == "mq" ? "MQ" : "WORKER";
  // A file named by the environment, then the environment itself, then the
  // usual files in the working directory and in ~.
  for (const std::string& var : {"IRON_" + up + "_CONFIG", std::string("IRON_CONFIG")})
    if (auto path = Env(var.c_str()); !path.empty())
      if (field = FromFile(path, key, p); !field.empty()) return;
  if (field = Env(("IRON_" + up + "_" + opt).c_str()); !field.empty()) return;
  if (field = Env(("IRON_" + opt).c_str()); !field.empty()) return;
  for (std::string dir : {std::string("."), Env("HOME")}) {
    if (dir.empty()) continue;
    for (const std::string& base :
         {"iron-" + p + ".json", "iron_" + p + ".json", std::string("iron.json")})
      for (const char* dot : {"", "."})
        if (field = FromFile(dir + "/" + dot + base, key, p); !field.empty()) return;
  }
}

}  // namespace

Connection Resolve(Connection c, Product product) {
  std::string p = product == Product::kWorker ? "worker" : "mq";
  Fill(c.scheme, "scheme", "SCHEME", p);
  Fill(c.host, "host", "HOST", p);
  Fill(c.port, "port", "PORT", p);
  Fill(c.project_id, "project_id", "PROJECT_ID", p);
  Fill(c.token, "token", "TOKEN", p);
  if (c.scheme.empty()) c.scheme = "http";
  if (c.host.empty()) c.host = "127.0.0.1";
  if (c.port.empty()) c.port = c.scheme == "https" ? "443" : "8080";
  if (c.project_id.empty()) {
    // Every request names it: without one it would be /projects//..., a 404
    // that says nothing of why.
    std::fprintf(stderr,
                 "kiln: no project id: give --project-id, set IRON_PROJECT_ID, or put "
                 "\"project_id\" in iron.json\n");
    std::exit(2);
  }
  return c;
}

std::string Escape(const std::string& s) { return PercentEncode(s); }

Result<Reply> Call(const Connection& c, const std::string& method, const std::string& target,
                   const std::string& body, const std::string& content_type) {
  if (c.scheme != "http" && c.scheme != "https")
    return Fail(
        Error::InvalidArgument("the CLI speaks http and https only (scheme " + c.scheme + ")"));
  // iron.json of a server on IPv6 says "[::1]": the brackets are for URLs
  // and Host headers, not for the resolver.
  std::string host = c.host, host_header = c.host;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  else if (host.find(':') != std::string::npos)
    host_header = "[" + host + "]";
  bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(method), target, 11};
  req.set(bhttp::field::host, host_header);
  req.set(bhttp::field::user_agent, "kiln-cli");
  if (!c.token.empty()) req.set(bhttp::field::authorization, "OAuth " + c.token);
  if (method != "GET") {
    req.set(bhttp::field::content_type, content_type);
    req.body() = body.empty() ? "{}" : body;
    req.prepare_payload();
  }
  try {
    asio::io_context ioc;
    auto reply = asio::co_spawn(ioc, Talk(c.scheme, host, c.port, req), asio::use_future);
    ioc.run();
    return reply.get();
  } catch (const std::exception& e) {
    return Fail(Error::Unavailable("cannot reach Kiln at " + c.scheme + "://" + host_header + ":" +
                                   c.port + ": " + e.what()));
  }
}

}  // namespace kiln::cli
