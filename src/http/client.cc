#include "http/client.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>

#include "base/thread_name.h"
#include "base/url.h"
#include "http/direct_io.h"
#include "http/message.h"

namespace kiln::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;

namespace {

// Headers that frame the request or route it; the client writes them.
bool IsFraming(std::string_view name) {
  for (std::string_view f : {"host", "content-length", "transfer-encoding", "connection"})
    if (name.size() == f.size() && std::equal(f.begin(), f.end(), name.begin(), [](char a, char b) {
          return a == std::tolower(static_cast<unsigned char>(b));
        }))
      return true;
  return false;
}

// The request line and header of a POST, written by hand: Beast's fields and
// serializer cost more than the rest of a delivery. HTTP/1.1 keeps the
// connection alive by default.
std::string RequestHead(const HttpUrl& u, const Client::Headers& headers, size_t body_size) {
  std::string out = "POST ";
  AppendHeaderText(u.target, &out);
  out += " HTTP/1.1\r\nHost: ";
  bool v6 = u.host.find(':') != std::string::npos;
  if (v6) out += '[';
  AppendHeaderText(u.host, &out);
  if (v6) out += ']';
  if (u.port != (u.tls ? "443" : "80")) {
    out += ':';
    AppendHeaderText(u.port, &out);
  }
  for (const auto& [k, v] : headers) {
    // Framing is ours alone: a subscriber's could smuggle a request. Names
    // that are not tokens are refused when a queue is saved; any stored
    // before that are not sent either.
    if (IsFraming(k) || !IsHeaderToken(k)) continue;
    out += "\r\n";
    AppendHeaderText(k, &out);
    out += ": ";
    AppendHeaderText(v, &out);
  }
  out += "\r\nContent-Length: ";
  out += std::to_string(body_size);
  out += "\r\n\r\n";
  return out;
}

bool IsPrivate(const asio::ip::address& a) {
  if (a.is_loopback() || a.is_unspecified() || a.is_multicast()) return true;
  if (a.is_v6()) {
    auto v6 = a.to_v6();
    if (v6.is_v4_mapped()) return IsPrivate(asio::ip::make_address_v4(asio::ip::v4_mapped, v6));
    auto b = v6.to_bytes();
    auto v4_at = [&](size_t i) {
      return IsPrivate(asio::ip::address_v4({b[i], b[i + 1], b[i + 2], b[i + 3]}));
    };
    // IPv6 forms that carry an IPv4 address a gateway may reach: NAT64
    // (64:ff9b::/96; the local-use 64:ff9b:1::/48 may embed it anywhere, so
    // all of it), 6to4 (2002::/16), IPv4-compatible (::/96), IPv4-translated
    // (SIIT, ::ffff:0:0/96) and Teredo (2001::/32, all of it: the client's
    // address is obfuscated in it).
    auto zeros = [&](size_t from, size_t to) {
      return std::all_of(b.begin() + from, b.begin() + to, [](unsigned char x) { return x == 0; });
    };
    if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) {
      if (b[4] == 0x00 && b[5] == 0x01) return true;
      return zeros(4, 12) ? v4_at(12) : true;
    }
    if (b[0] == 0x20 && b[1] == 0x02) return v4_at(2);
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00) return true;
    if (zeros(0, 8) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0) return true;
    if (zeros(0, 12)) return true;
    return v6.is_link_local() || v6.is_site_local() ||  // fe80::/10, fec0::/10
           (b[0] & 0xfe) == 0xfc;                       // fc00::/7
  }
  auto b = a.to_v4().to_bytes();
  return b[0] == 10 || b[0] == 0 || (b[0] == 172 && (b[1] & 0xf0) == 16) ||
         (b[0] == 192 && b[1] == 168) || (b[0] == 169 && b[1] == 254) ||
         (b[0] == 100 && (b[1] & 0xc0) == 64) ||               // carrier-grade NAT
         (b[0] == 192 && b[1] == 0 && b[2] == 0) ||            // 192.0.0.0/24
         (b[0] == 198 && (b[1] & 0xfe) == 18) || b[0] >= 240;  // benchmarking; reserved
}

constexpr size_t kAnswerRead = 16 * 1024;       // bytes asked for by an answer's first read
constexpr uint64_t kMaxAnswerBody = 64 * 1024;  // of a subscriber's answer: read, then dropped

struct Conn {
  std::string key;
  std::chrono::steady_clock::time_point idle_since;  // while in the idle pool
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;

  beast::tcp_stream& lowest() { return plain ? *plain : beast::get_lowest_layer(*tls); }
};

}  // namespace

// One of the client's threads: an io_context and the idle connections of
// the requests it ran. Touched only from its own thread.
struct Client::Impl {
  ClientOptions options;
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard = asio::make_work_guard(ioc);
  ssl::context& tls_ctx;
  Resolver& resolver;
  std::map<std::string, std::vector<std::unique_ptr<Conn>>> idle;  // per host, oldest first
  size_t idle_count = 0;
  std::thread thread;

  Impl(ClientOptions o, ssl::context& tls, Resolver& r)
      : options(std::move(o)), tls_ctx(tls), resolver(r) {
    asio::co_spawn(ioc, SweepIdle(), asio::detached);
    thread = std::thread([this] {
      NameThisThread(options.thread_name);
      ioc.run();
    });
  }

  void Stop() {
    guard.reset();
    ioc.stop();
  }
  ~Impl() {
    Stop();
    if (thread.joinable()) thread.join();
  }

  bool Stale(const Conn& c, std::chrono::steady_clock::time_point now) const {
    return now - c.idle_since >= options.idle_timeout;
  }

  // Whether an idle connection can carry the next request: the peer has
  // not closed it, nor (plain http) sent anything unasked, such as a 408
  // before closing, that would be read as the next request's answer. (TLS
  // may have records of its own waiting, a session ticket: only a close
  // counts there.)
  static constexpr auto kLookAfterIdle = std::chrono::milliseconds(500);
  static bool StillGood(Conn& c) {
    if (c.buffer.size() > 0) return false;  // read with the last answer, past its end
    char byte;
    ssize_t n = ::recv(c.lowest().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return false;
    if (n > 0) return c.tls != nullptr;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }

  // The host's most recently idle connection that is still good, unless
  // even the newest is stale (then all of the host's are: they are kept
  // oldest first).
  std::unique_ptr<Conn> TakeIdle(const std::string& key) {
    auto it = idle.find(key);
    if (it == idle.end()) return nullptr;
    auto& v = it->second;
    if (Stale(*v.back(), std::chrono::steady_clock::now())) {
      idle_count -= v.size();
      idle.erase(it);
      return nullptr;
    }
    std::unique_ptr<Conn> c;
    auto now = std::chrono::steady_clock::now();
    while (!v.empty() && !c) {
      c = std::move(v.back());
      v.pop_back();
      --idle_count;
      // Looked at only after a while idle: a connection reused at once (a
      // busy subscriber's) saves the system call, and peers close or time
      // out idle ones after seconds, not milliseconds.
      if (Stale(*c, now) || (now - c->idle_since >= kLookAfterIdle && !StillGood(*c))) c.reset();
    }
    if (v.empty()) idle.erase(it);
    return c;
  }

  void GiveBack(std::unique_ptr<Conn> c) {
    auto& v = idle[c->key];
    if (v.size() >= options.max_idle_per_host) return;
    c->idle_since = std::chrono::steady_clock::now();
    v.push_back(std::move(c));
    if (++idle_count > options.max_idle) CloseLongestIdle();
  }

  void CloseLongestIdle() {
    auto oldest = idle.end();
    for (auto it = idle.begin(); it != idle.end(); ++it)
      if (oldest == idle.end() ||
          it->second.front()->idle_since < oldest->second.front()->idle_since)
        oldest = it;
    if (oldest == idle.end()) return;
    oldest->second.erase(oldest->second.begin());
    --idle_count;
    if (oldest->second.empty()) idle.erase(oldest);
  }

  // Closes stale idle connections (and forgets hosts with none left) a few
  // times per idle_timeout.
  awaitable<void> SweepIdle() {
    asio::steady_timer timer(ioc);
    auto period = std::max<std::chrono::steady_clock::duration>(options.idle_timeout / 4,
                                                                std::chrono::milliseconds(10));
    for (;;) {
      timer.expires_after(period);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
      auto now = std::chrono::steady_clock::now();
      for (auto it = idle.begin(); it != idle.end();) {
        auto& v = it->second;
        auto fresh =
            std::find_if(v.begin(), v.end(), [&](const auto& c) { return !Stale(*c, now); });
        idle_count -= static_cast<size_t>(fresh - v.begin());
        v.erase(v.begin(), fresh);
        it = v.empty() ? idle.erase(it) : std::next(it);
      }
    }
  }

  // The addresses of `u`, by the deadline. An IP address is taken as it is;
  // a name goes to the client's Resolver (its own thread per name, answers
  // kept a while): a lookup that hangs fails this attempt at its deadline
  // and holds no other name's.
  awaitable<std::vector<tcp::endpoint>> Resolve(const HttpUrl& u,
                                                std::chrono::steady_clock::time_point deadline) {
    auto port = static_cast<unsigned short>(std::strtoul(u.port.c_str(), nullptr, 10));
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(u.host, ec);
    if (!ec) co_return std::vector<tcp::endpoint>{tcp::endpoint(addr, port)};
    struct Wait {
      explicit Wait(asio::io_context& ioc) : timer(ioc) {}
      asio::steady_timer timer;
      std::optional<Result<Addresses>> answer;
    };
    auto wait = std::make_shared<Wait>(ioc);
    wait->timer.expires_at(deadline);
    resolver.Resolve(u.host, u.port, [wait, ex = ioc.get_executor()](Result<Addresses> r) {
      asio::post(ex, [wait, r = std::move(r)]() mutable {
        wait->answer = std::move(r);
        wait->timer.cancel();
      });
    });
    co_await wait->timer.async_wait(asio::redirect_error(use_awaitable, ec));
    if (!wait->answer) throw std::runtime_error("resolving " + u.host + " timed out");
    if (!*wait->answer) throw std::runtime_error(wait->answer->error().message());
    std::vector<tcp::endpoint> out;
    for (const auto& a : **wait->answer) {
      auto ip = asio::ip::make_address(a, ec);
      if (!ec) out.emplace_back(ip, port);
    }
    co_return out;
  }

  awaitable<std::unique_ptr<Conn>> Connect(const HttpUrl& u,
                                           std::chrono::steady_clock::time_point deadline) {
    std::vector<tcp::endpoint> endpoints;
    for (const auto& e : co_await Resolve(u, deadline))
      if (!options.forbid_private || !IsPrivate(e.address())) endpoints.push_back(e);
    if (endpoints.empty())
      throw std::runtime_error("address of " + u.host + " is not allowed (private or loopback)");
    auto c = std::make_unique<Conn>();
    c->key = u.key();
    if (u.tls) {
      c->tls = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc, tls_ctx);
      // SNI names hosts only: an address is never sent as one (RFC 6066 §3).
      boost::system::error_code not_ip;
      asio::ip::make_address(u.host, not_ip);
      if (not_ip && !SSL_set_tlsext_host_name(c->tls->native_handle(), u.host.c_str()))
        throw std::runtime_error("cannot set TLS server name");
      c->tls->set_verify_callback(ssl::host_name_verification(u.host));
    } else {
      c->plain = std::make_unique<beast::tcp_stream>(ioc);
    }
    c->lowest().expires_at(deadline);
    co_await c->lowest().async_connect(endpoints, use_awaitable);
    c->lowest().socket().set_option(tcp::no_delay(true));
    c->lowest().socket().non_blocking(true);  // for Exchange's direct write
    if (c->tls) co_await c->tls->async_handshake(ssl::stream_base::client, use_awaitable);
    co_return c;
  }

  struct Answer {
    int status = 0;
    bool keep_alive = false;
  };

  // Sends the request and reads the final answer (1xx answers skipped).
  // `*answered` turns true at the first byte of an answer: from then on the
  // subscriber surely had the request.
  //
  // On a plain connection the request is written directly while the
  // socket takes it, and an answer that one read brings whole is parsed
  // from the buffer (direct_io.h).
  template <typename Stream>
  awaitable<Answer> Exchange(Stream& s, Conn& c, const std::string& head, const std::string& body,
                             bool* answered) {
    std::array<asio::const_buffer, 2> out{asio::buffer(head), asio::buffer(body)};
    constexpr bool kPlain = std::is_same_v<Stream, beast::tcp_stream>;
    if constexpr (kPlain) {
      boost::system::error_code ec;
      WriteNow(s.socket(), out, &ec);
      if (ec) throw boost::system::system_error(ec);
    }
    if (asio::buffer_size(out) > 0) co_await asio::async_write(s, out, use_awaitable);
    for (;;) {
      // Answers are judged by their status: a body is read (to keep the
      // connection) up to 64 KiB, so that 1,024 deliveries in flight hold
      // at most 64 MiB of answers; past it the answer stands, the
      // connection goes.
      bhttp::response_parser<bhttp::string_body> parser;
      parser.body_limit(kMaxAnswerBody);
      boost::system::error_code ec;
      bool parsed = false;
      if constexpr (kPlain) {
        if (c.buffer.size() == 0) {
          size_t n = co_await s.async_read_some(c.buffer.prepare(kAnswerRead),
                                                asio::redirect_error(use_awaitable, ec));
          c.buffer.commit(n);
        }
        if (!ec) parsed = ParseBuffered(parser, c.buffer, /*whole=*/true, &ec);
      }
      if (!ec && !parsed)
        co_await bhttp::async_read(s, c.buffer, parser, asio::redirect_error(use_awaitable, ec));
      *answered = *answered || parser.got_some() || c.buffer.size() > 0;
      // Only the status matters: an answer with a body too big to keep
      // still counts, on a connection that is closed rather than drained.
      bool too_big = ec == bhttp::error::body_limit && parser.is_header_done();
      if (ec && !too_big) throw boost::system::system_error(ec);
      int status = static_cast<int>(parser.get().result_int());
      if (too_big) co_return Answer{status, false};
      if (status >= 100 && status < 200 && status != 101) continue;  // 100 Continue, 103 ...
      // Bytes after the answer (a second answer nobody asked for) or a
      // switch of protocols would be read as the next request's answer:
      // such a connection is not kept.
      co_return Answer{status, parser.keep_alive() && c.buffer.size() == 0 && status != 101};
    }
  }

  awaitable<void> Do(std::string url, Headers headers, std::string body, Done done) {
    std::optional<HttpUrl> parsed = ParseHttpUrl(url);
    if (!parsed) {
      // Not quoted: a URL's user info may hold a secret, and this reaches
      // delivery statuses and error reports.
      done(0, "unsupported url (http:// or https://, with a host)");
      co_return;
    }
    const HttpUrl& u = *parsed;
    std::string head = RequestHead(u, headers, body.size());

    std::unique_ptr<Conn> conn = TakeIdle(u.key());
    for (int attempt = 0; attempt < 2; ++attempt) {
      bool reused = conn != nullptr, answered = false, timed_out = false;
      std::string error;
      int status = 0;
      try {
        // One deadline for the whole attempt: name resolution, connect,
        // handshake, request and answer.
        if (!conn) {
          auto deadline = std::chrono::steady_clock::now() + options.timeout;
          conn = co_await Connect(u, deadline);
        } else {
          conn->lowest().expires_after(options.timeout);
        }
        Answer a = conn->tls ? co_await Exchange(*conn->tls, *conn, head, body, &answered)
                             : co_await Exchange(*conn->plain, *conn, head, body, &answered);
        conn->lowest().expires_never();
        if (a.keep_alive) GiveBack(std::move(conn));
        status = a.status;
      } catch (const boost::system::system_error& e) {
        error = e.what();
        timed_out = e.code() == beast::error::timeout;
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (status != 0) {  // outside the try: `done` runs once, whatever it throws
        done(status, "");
        co_return;
      }
      conn.reset();
      // A pooled connection the server closed meanwhile: try once on a
      // fresh one. Not after a timeout or any byte of an answer: the
      // subscriber may have the request already, and its retry is the
      // queue's to schedule.
      if (reused && attempt == 0 && !answered && !timed_out) continue;
      done(0, error);
      co_return;
    }
  }
};

struct Client::Pool {
  explicit Pool(ResolverOptions r) : resolver(std::move(r)) {}
  ssl::context tls{ssl::context::tls_client};
  Resolver resolver;
  std::vector<std::unique_ptr<Impl>> threads;
};

Client::Client(ClientOptions options) : pool_(std::make_unique<Pool>(options.resolver)) {
  pool_->tls.set_default_verify_paths();
  if (!options.ca_file.empty()) {
    boost::system::error_code ec;
    pool_->tls.load_verify_file(options.ca_file, ec);
    if (ec) spdlog::error("cannot load CA file {}: {}", options.ca_file, ec.message());
  }
  pool_->tls.set_verify_mode(ssl::verify_peer);
  size_t n = std::max<size_t>(1, options.threads);
  for (size_t i = 0; i < n; ++i)
    pool_->threads.push_back(std::make_unique<Impl>(options, pool_->tls, pool_->resolver));
}

// Stop every thread before any goes away: an answer handled on one thread
// may start a request on another.
Client::~Client() {
  for (auto& t : pool_->threads) t->Stop();
  for (auto& t : pool_->threads) t->thread.join();
  pool_->resolver.Close();  // no lookup posts to an io context from now on
}

void Client::Post(std::string url, Headers headers, std::string body, Done done,
                  uint64_t affinity) {
  auto& impl = *pool_->threads[affinity % pool_->threads.size()];
  asio::co_spawn(impl.ioc,
                 impl.Do(std::move(url), std::move(headers), std::move(body), std::move(done)),
                 asio::detached);
}

}  // namespace kiln::http
