#include "http/server.h"

#include <spdlog/spdlog.h>
#include <sys/sendfile.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <condition_variable>
#include <list>
#include <mutex>
#include <thread>

#include "base/file_range.h"
#include "base/thread_name.h"
#include "http/direct_io.h"

namespace kiln::http {

bool Request::PeerClosed() const {
  // Pipelined requests read already: a client that then half-closed still
  // waits for their answers.
  if (socket_fd < 0 || more_buffered) return false;
  char c;
  ssize_t n = recv(socket_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;                                           // more requests, pipelined
  if (n == 0) return true;                                           // the client's FIN
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;  // a reset
}

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;

namespace {

// A request target for the access log: the values of query parameters that
// carry secrets (`oauth`, the token of webhooks; `reservation_id`, the secret
// of push acknowledgements) are replaced by "***".
std::string RedactedTarget(std::string_view target) {
  size_t q = target.find('?');
  if (q == std::string_view::npos) return std::string(target);
  std::string out(target.substr(0, q + 1));
  std::string_view rest = target.substr(q + 1);
  bool first = true;
  while (!rest.empty() || first) {
    size_t amp = rest.find('&');
    std::string_view param = rest.substr(0, amp);
    if (!first) out += '&';
    first = false;
    size_t eq = param.find('=');
    std::string_view key = param.substr(0, eq);
    std::string decoded;  // as ParseQuery reads it: ?%6Fauth= is an oauth too
    bool secret = eq != std::string_view::npos && PercentDecode(key, true, &decoded) &&
                  (decoded == "oauth" || decoded == "reservation_id");
    if (secret)
      out.append(key).append("=***");
    else
      out.append(param);
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
  return out;
}

// How long `bytes` take at the slowest rate a transfer may go (64 KiB/s),
// on top of the read timeout.
std::chrono::seconds TransferTime(uint64_t bytes) {
  return std::chrono::seconds(bytes / (64 * 1024));
}

std::string ErrorBody(std::string_view msg) {
  std::string out = "{\"msg\":\"";
  out += msg;  // callers pass fixed ASCII text
  out += "\"}";
  return out;
}

// Drops the CR and LF bytes at the start of `buffer`; true when that was
// all it held.
bool SkipEmptyLines(beast::flat_buffer& buffer) {
  auto data = static_cast<const char*>(buffer.data().data());
  size_t n = 0;
  while (n < buffer.size() && (data[n] == '\r' || data[n] == '\n')) ++n;
  buffer.consume(n);
  return n > 0 && buffer.size() == 0;
}

uint64_t BodySize(const Response& res) { return res.file ? res.file->size() : res.body.size(); }

// The status line and header of `res` as Beast would write them for this
// HTTP version and keep-alive choice. Written by hand: Beast's fields and
// serializer cost several allocations and thousands of instructions per
// response, more than the rest of a small request.
void WriteHead(const Response& res, unsigned version, bool keep_alive, std::string* out) {
  out->clear();
  out->append(version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  out->append(std::to_string(res.status));
  out->push_back(' ');
  out->append(bhttp::obsolete_reason(static_cast<bhttp::status>(res.status)));
  out->append("\r\nServer: kiln\r\nContent-Type: ");
  AppendHeaderText(res.content_type, out);
  out->append("\r\n");
  for (const auto& [k, v] : res.headers) {
    AppendHeaderText(k, out);
    out->append(": ");
    AppendHeaderText(v, out);
    out->append("\r\n");
  }
  out->append("Content-Length: ");
  out->append(std::to_string(BodySize(res)));
  out->append("\r\n");
  if (version == 10 && keep_alive) out->append("Connection: keep-alive\r\n");
  if (version != 10 && !keep_alive) out->append("Connection: close\r\n");
  out->append("\r\n");
}

void ParseQuery(std::string_view q, Request* req) {
  while (!q.empty()) {
    size_t amp = q.find('&');
    auto pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    // A part that is not valid percent-encoding stands as it came (Go's
    // "%!d(bool=true)" sent by hand is still a status filter), rather than
    // vanishing and taking its meaning with it.
    auto decode = [](std::string_view part, std::string* out) {
      if (!PercentDecode(part, true, out)) out->assign(part);
    };
    std::string k, v;
    decode(pair.substr(0, eq), &k);
    if (eq != std::string_view::npos) decode(pair.substr(eq + 1), &v);
    req->query.emplace(std::move(k), std::move(v));
  }
}

// A request's method, target, path, query and headers (names lower-cased):
// all but its body.
template <typename Fields>
Request HeadOf(const bhttp::request<bhttp::string_body, Fields>& breq) {
  Request req;
  req.method = std::string(breq.method_string());
  req.target = std::string(breq.target());
  size_t qpos = req.target.find('?');
  req.path = req.target.substr(0, qpos);
  if (qpos != std::string::npos) ParseQuery(std::string_view(req.target).substr(qpos + 1), &req);
  req.headers.reserve(8);
  for (auto& f : breq) {
    std::string name(f.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    req.headers.emplace_back(std::move(name), std::string(f.value()));
  }
  return req;
}

// Connections open on this io thread (each io_context has one thread).
thread_local size_t tl_connections = 0;

}  // namespace

struct Server::Impl {
  ServerOptions options;
  const Router& router;
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::atomic<size_t> next_context{0};

  // Live connections, so that Stop can close the idle ones.
  struct Conn {
    explicit Conn(tcp::socket* s) : sock(s) {}
    tcp::socket* sock;
    std::atomic<bool> busy{false};  // a request is being handled
  };
  // A connection's deadline, watched by a coarse timer instead of arming a
  // timer for every read and write. Used on the connection's io thread only.
  struct Watch {
    explicit Watch(const asio::any_io_executor& ex) : timer(ex) {}
    asio::steady_timer timer;
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
    bool done = false;
  };
  static constexpr std::chrono::milliseconds kWatchEvery{250};
  static constexpr size_t kFirstRead = 16 * 1024;  // bytes asked for by an idle connection's read
  std::mutex conns_mu;
  std::list<Conn> conns;
  std::unordered_map<std::string, size_t> per_address;         // open connections, under conns_mu
  std::chrono::steady_clock::time_point next_address_warning;  // under conns_mu
  std::atomic<size_t> live{0};
  std::atomic<bool> warned_full{false};
  boost::system::error_code last_accept_error;  // Accept's alone
  // Set as the server goes away: the io contexts, destroyed after this,
  // destroy the sessions still suspended in them, and those must not touch
  // the connection list (destroyed before the contexts).
  std::atomic<bool> torn_down{false};
  ~Impl() {
    torn_down = true;
    // The contexts first, while what their sessions may look at is here.
    guards.clear();
    acceptor.reset();
    contexts.clear();
  }

  // Run returns only after Stop has finished touching the contexts.
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stop_done = false;

  Impl(ServerOptions o, const Router& r) : options(std::move(o)), router(r) {}

  awaitable<void> Accept(std::atomic<bool>& stopping) {
    for (;;) {
      auto& ctx = *contexts[next_context++ % contexts.size()];
      boost::system::error_code ec;
      tcp::socket sock =
          co_await acceptor->async_accept(ctx, asio::redirect_error(use_awaitable, ec));
      if (ec) {
        if (stopping || ec == asio::error::operation_aborted) co_return;
        // Out of file descriptors, say: wait a little, not spin, and say
        // so once until an accept works again (not every 50 ms).
        if (ec != last_accept_error) spdlog::warn("accept: {}", ec.message());
        last_accept_error = ec;
        asio::steady_timer pause(acceptor->get_executor(), std::chrono::milliseconds(50));
        co_await pause.async_wait(asio::redirect_error(use_awaitable, ec));
        continue;
      }
      last_accept_error = {};
      if (live.load() >= options.max_connections) {
        if (!warned_full.exchange(true))
          spdlog::warn("{} connections open (--max-connections): closing new ones",
                       options.max_connections);
        sock.close(ec);
        continue;
      }
      warned_full = false;
      auto ep = sock.remote_endpoint(ec);
      std::string remote = ec ? std::string() : ep.address().to_string();
      std::string client = ec ? std::string() : ClientKey(ep.address());
      if (!TakeAddressSlot(client)) {
        sock.close(ec);
        continue;
      }
      sock.set_option(tcp::no_delay(true), ec);
      asio::co_spawn(ctx, Session(std::move(sock), std::move(remote), std::move(client), stopping),
                     asio::detached);
    }
  }

  bool IsUpload(std::string_view target) const {
    return options.is_upload && options.is_upload(target.substr(0, target.find('?')));
  }

  // Writes `out` directly while the socket takes it (it is non-blocking,
  // direct_io.h), and awaits only for what is left.
  static awaitable<void> WriteAll(tcp::socket& s, std::array<asio::const_buffer, 2> out,
                                  boost::system::error_code* ec) {
    WriteNow(s, out, ec);
    if (*ec || asio::buffer_size(out) == 0) co_return;
    co_await asio::async_write(s, out, asio::redirect_error(use_awaitable, *ec));
  }

  // Sends `file` by sendfile(2) as the non-blocking socket takes it: the
  // kernel copies from the page cache, and no more than the socket buffer
  // is ever on its way. A file cut short since it was opened ends the
  // connection (the Content-Length sent no longer holds).
  static awaitable<void> SendFile(tcp::socket& s, const FileRange& file,
                                  boost::system::error_code* ec) {
    auto off = static_cast<off_t>(file.offset());
    uint64_t left = file.size();
    while (left > 0) {
      ssize_t n = ::sendfile(s.native_handle(), file.fd(), &off,
                             static_cast<size_t>(std::min<uint64_t>(left, 1 << 20)));
      if (n > 0) {
        left -= static_cast<uint64_t>(n);
      } else if (n == 0) {
        *ec = asio::error::eof;
        co_return;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        co_await s.async_wait(tcp::socket::wait_write, asio::redirect_error(use_awaitable, *ec));
        if (*ec) co_return;
      } else if (errno != EINTR) {
        *ec = boost::system::error_code(errno, boost::system::system_category());
        co_return;
      }
    }
  }

  // Cancels the connection's pending read or write once its deadline
  // passed, and again at every look until the session sets a new one: a
  // cancel finds nothing to cancel when the operation's completion is
  // already queued, and the operation after it must not run unwatched.
  static awaitable<void> Watchdog(std::shared_ptr<Watch> w, tcp::socket* sock) {
    for (;;) {
      w->timer.expires_after(kWatchEvery);
      boost::system::error_code ec;
      co_await w->timer.async_wait(asio::redirect_error(use_awaitable, ec));
      if (w->done) co_return;
      if (std::chrono::steady_clock::now() >= w->deadline) sock->cancel(ec);
    }
  }

  // What max_connections_per_address counts by: an IPv4 address (an IPv6
  // form of one too), or the /64 of an IPv6 one, since one host is often
  // given a whole /64.
  static std::string ClientKey(const asio::ip::address& a) {
    if (a.is_v4()) return a.to_string();
    auto v6 = a.to_v6();
    if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
    auto bytes = v6.to_bytes();
    std::fill(bytes.begin() + 8, bytes.end(), 0);
    return asio::ip::address_v6(bytes).to_string() + "/64";
  }

  // One more connection from `client` (ClientKey), unless it has its most
  // open (max_connections_per_address); Session's end gives it back.
  bool TakeAddressSlot(const std::string& client) {
    std::lock_guard lock(conns_mu);
    size_t& n = per_address[client];
    if (n >= options.max_connections_per_address) {
      auto now = std::chrono::steady_clock::now();
      if (now >= next_address_warning) {  // not once for every refused connection
        spdlog::warn(
            "{} has {} connections open (--max-connections-per-address): closing its "
            "new ones",
            client, n);
        next_address_warning = now + std::chrono::seconds(10);
      }
      return false;
    }
    ++n;
    return true;
  }

  // `remote`: the client's address; `client`: its ClientKey, whose slot
  // (TakeAddressSlot) it holds.
  awaitable<void> Session(tcp::socket sock, std::string remote, std::string client,
                          std::atomic<bool>& stopping) {
    ++live;
    ++tl_connections;
    boost::system::error_code ec;
    tcp::socket stream(std::move(sock));
    stream.non_blocking(true, ec);  // for WriteAll's direct write
    auto watch = std::make_shared<Watch>(stream.get_executor());
    asio::co_spawn(stream.get_executor(), Watchdog(watch, &stream), asio::detached);
    auto expires_after = [&](std::chrono::seconds d) {
      watch->deadline = std::chrono::steady_clock::now() + d;
    };
    std::list<Conn>::iterator me;
    {
      std::lock_guard lock(conns_mu);
      me = conns.emplace(conns.end(), &stream);
    }
    // However the session ends (an exception out of it too: co_spawn's
    // detached would drop it silently), it leaves the connection list and
    // the counts, so that Stop never reaches a socket that is gone.
    struct Leave {
      Impl* self;
      std::list<Conn>::iterator me;
      std::shared_ptr<Watch> watch;
      const std::string* client;
      ~Leave() {
        if (self->torn_down) return;
        watch->done = true;
        watch->timer.cancel();
        {
          std::lock_guard lock(self->conns_mu);
          self->conns.erase(me);
          if (auto it = self->per_address.find(*client);
              it != self->per_address.end() && --it->second == 0)
            self->per_address.erase(it);
        }
        --tl_connections;
        --self->live;
      }
    } leave{this, me, watch, &client};
    beast::flat_buffer buffer;
    std::string head;     // of the response, reused
    bool linger = false;  // answered before the whole request was read
    bool first = true;
    int blank_reads = 0;  // reads in a row that brought only empty lines
    while (!stopping) {
      bhttp::request_parser<bhttp::string_body> parser;
      parser.header_limit(static_cast<uint32_t>(options.max_header_bytes));
      // Beast checks a Content-Length against the limit as the header ends:
      // the larger upload limit first, the request's own once its path is known.
      parser.body_limit(options.is_upload
                            ? std::max(options.max_body_bytes, options.max_upload_bytes)
                            : options.max_body_bytes);
      // Idle until the first bytes of the next request, then a read timeout
      // for the whole of it. A read, not a wait for readability: asio tries
      // a read at once and takes bytes already there without a round
      // through epoll (a wait re-arms the socket with epoll_ctl every time).
      if (buffer.size() == 0) {
        expires_after(first ? options.read_timeout : options.idle_timeout);
        size_t n = co_await stream.async_read_some(buffer.prepare(kFirstRead),
                                                   asio::redirect_error(use_awaitable, ec));
        if (ec) break;
        buffer.commit(n);
      }
      // RFC 9112 §2.2: empty lines before a request line are passed over
      // (some clients end a body with an extra CRLF); a few reads of them,
      // not for ever.
      if (SkipEmptyLines(buffer)) {
        if (++blank_reads > 4) break;
        continue;  // nothing but empty lines yet: read on
      }
      blank_reads = 0;
      // A request has begun: a stop from now on lets it finish and be
      // answered (and only then closes), rather than resetting it.
      me->busy = true;
      expires_after(options.read_timeout);
      first = false;
      if (!ParseBuffered(parser, buffer, /*whole=*/false, &ec))
        co_await bhttp::async_read_header(stream, buffer, parser,
                                          asio::redirect_error(use_awaitable, ec));
      bool upload = !ec && !parser.is_done() && IsUpload(parser.get().target());
      std::shared_ptr<void> admission;  // check_body's, for the handler's Request
      if (!ec && !parser.is_done() && options.check_body &&
          (upload || parser.chunked() || parser.content_length().value_or(0) > kUncheckedBody)) {
        // Only a request allowed to send it (a good token) makes the server
        // take a large body: the others are answered before it is read.
        if (auto refused = options.check_body(HeadOf(parser.get()), &admission)) {
          WriteHead(*refused, parser.get().version(), false, &head);
          std::array<asio::const_buffer, 2> out{asio::buffer(head), asio::buffer(refused->body)};
          expires_after(std::chrono::seconds(5));
          co_await asio::async_write(stream, out, asio::redirect_error(use_awaitable, ec));
          linger = true;
          break;
        }
      }
      if (!ec && !parser.is_done() && !upload) {
        if (auto len = parser.content_length(); len && *len > options.max_body_bytes)
          ec = bhttp::error::body_limit;
        else
          parser.body_limit(options.max_body_bytes);  // chunked bodies count down from here
      }
      // A large body gets the read timeout and the time it takes at the
      // slowest rate served (an upload of 64 MB over a slow link is not cut
      // at 30 s; a client trickling bytes still is).
      if (!ec && !parser.is_done())
        if (auto len = parser.content_length())
          expires_after(options.read_timeout + TransferTime(*len));
      if (!ec && !parser.is_done() && buffer.size() == 0 && parser.get().version() >= 11 &&
          beast::iequals(parser.get()[bhttp::field::expect], "100-continue")) {
        // The client waits for this before it sends the body (curl, for
        // large uploads: else a second's pause).
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        co_await asio::async_write(stream, asio::buffer(kContinue.data(), kContinue.size()),
                                   asio::redirect_error(use_awaitable, ec));
      }
      if (!ec && !parser.is_done() && !ParseBuffered(parser, buffer, /*whole=*/true, &ec)) {
        if (parser.chunked()) {
          // A chunked body has no length to time by: its deadline grows with
          // what has come, at the same slowest rate (a chunked upload over a
          // slow link is not cut at the read timeout; a trickle still is).
          auto began = std::chrono::steady_clock::now();
          watch->deadline = began + options.read_timeout;
          uint64_t got = 0;
          while (!ec && !parser.is_done()) {
            got += co_await bhttp::async_read_some(stream, buffer, parser,
                                                   asio::redirect_error(use_awaitable, ec));
            watch->deadline = began + options.read_timeout + TransferTime(got);
          }
        } else {
          co_await bhttp::async_read(stream, buffer, parser,
                                     asio::redirect_error(use_awaitable, ec));
        }
      }
      if (ec) {
        int status = 0;
        const char* msg = nullptr;
        if (ec == bhttp::error::body_limit) {
          status = 413, msg = "Request body too large";
        } else if (ec == bhttp::error::header_limit) {
          status = 431, msg = "Request headers too large";
        } else if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category() &&
                   ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
          status = 400, msg = "Malformed HTTP request";
        }
        if (status) {
          bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), 11};
          res.set(bhttp::field::content_type, "application/json");
          res.set(bhttp::field::connection, "close");
          res.body() = ErrorBody(msg);
          res.prepare_payload();
          expires_after(std::chrono::seconds(5));
          co_await bhttp::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
          linger = true;
        }
        break;
      }
      me->busy = true;
      watch->deadline = std::chrono::steady_clock::time_point::max();
      auto& breq = parser.get();
      bool keep_alive = breq.keep_alive();
      auto started = std::chrono::steady_clock::now();
      Response res = co_await Handle(breq, remote, stream.native_handle(), buffer.size() > 0,
                                     std::move(admission));
      bool keep = keep_alive && !stopping;
      WriteHead(res, breq.version(), keep, &head);
      if (options.access_log) {
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - started)
                      .count();
        spdlog::info("{} {} {} {} {}us", remote, std::string_view(breq.method_string()),
                     RedactedTarget(breq.target()), res.status, us);
      }
      expires_after(options.read_timeout + TransferTime(BodySize(res)));
      // A HEAD answer has the head alone: its Content-Length is that of the
      // body a GET would get, and a body would be read as the next answer.
      bool head_only = breq.method() == bhttp::verb::head;
      std::array<asio::const_buffer, 2> out{
          asio::buffer(head), head_only ? asio::const_buffer() : asio::buffer(res.body)};
      co_await WriteAll(stream, out, &ec);
      if (!ec && res.file && !head_only) co_await SendFile(stream, *res.file, &ec);
      me->busy = false;
      if (ec || !keep) break;
    }
    stream.shutdown(tcp::socket::shutdown_send, ec);
    if (linger) {
      // An answer went out with the request's body unread. Closing now,
      // with bytes still coming, would make the kernel send a reset that can
      // destroy the answer before the client reads it: read and drop what
      // the client still sends, for up to 2 s.
      expires_after(std::chrono::seconds(2));
      std::array<char, 16384> drop;
      boost::system::error_code rec;
      while (!rec)
        co_await stream.async_read_some(asio::buffer(drop),
                                        asio::redirect_error(use_awaitable, rec));
    }
  }

  awaitable<Response> Handle(bhttp::request<bhttp::string_body>& breq, const std::string& remote,
                             int socket_fd, bool more_buffered, std::shared_ptr<void> admission) {
    Request req = HeadOf(breq);
    req.admission = std::move(admission);
    req.body = std::move(breq.body());
    req.remote = remote;
    req.socket_fd = socket_fd;
    req.more_buffered = more_buffered;
    req.sole_connection = tl_connections == 1;
    const Handler* handler = nullptr;
    switch (router.Find(req, &handler)) {
      case Router::Match::kFound:
        break;
      case Router::Match::kNoPath:
        co_return Response{404, ErrorBody("Not found")};
      case Router::Match::kNoMethod:
        co_return Response{405, ErrorBody("Method not allowed")};
      case Router::Match::kBadPath:
        co_return Response{400, ErrorBody("Malformed path")};
    }
    try {
      co_return co_await (*handler)(req);
    } catch (const std::exception& e) {
      spdlog::error("handler for {} {} threw: {}", req.method, req.path, e.what());
      co_return Response{500, ErrorBody("Internal error")};
    }
  }
};

Server::Server(ServerOptions options, const Router& router)
    : impl_(std::make_unique<Impl>(std::move(options), router)) {
  int n = impl_->options.threads > 0 ? impl_->options.threads
                                     : static_cast<int>(std::thread::hardware_concurrency());
  if (n < 1) n = 1;
  for (int i = 0; i < n; ++i) {
    impl_->contexts.push_back(std::make_unique<asio::io_context>(1));
    impl_->guards.push_back(asio::make_work_guard(*impl_->contexts.back()));
  }
}

Server::~Server() = default;

asio::io_context& Server::context(size_t i) { return *impl_->contexts[i % impl_->contexts.size()]; }
size_t Server::context_count() const { return impl_->contexts.size(); }

Result<uint16_t> Server::Listen(const std::function<Result<void>(uint16_t port)>& bound) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(impl_->options.host, ec);
  if (ec) return Fail(Error::InvalidArgument("bad listen address: " + impl_->options.host));
  tcp::endpoint ep(addr, impl_->options.port);
  auto acc = std::make_unique<tcp::acceptor>(*impl_->contexts[0]);
  acc->open(ep.protocol(), ec);
  if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc->bind(ep, ec);
  uint16_t port = 0;
  if (!ec) port = acc->local_endpoint(ec).port();
  if (!ec && bound) {
    if (auto r = bound(port); !r) return Fail(r.error());
  }
  if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return Fail(Error::Unavailable("cannot listen on " + impl_->options.host + ":" +
                                   std::to_string(impl_->options.port) + ": " + ec.message()));
  impl_->acceptor = std::move(acc);
  asio::co_spawn(*impl_->contexts[0], impl_->Accept(stopping_), asio::detached);
  return port;
}

void Server::Run() {
  std::vector<std::thread> threads;
  for (size_t i = 1; i < impl_->contexts.size(); ++i)
    threads.emplace_back([this, i] {
      NameThisThread("kiln-io" + std::to_string(i));
      impl_->contexts[i]->run();
    });
  NameThisThread("kiln-io0");
  impl_->contexts[0]->run();
  for (auto& t : threads) t.join();
  std::unique_lock lock(impl_->stop_mu);
  impl_->stop_cv.wait(lock, [this] { return impl_->stop_done; });
}

void Server::Stop(std::chrono::milliseconds grace) {
  if (stopping_.exchange(true)) return;
  asio::post(*impl_->contexts[0], [this] {
    boost::system::error_code ec;
    if (impl_->acceptor) impl_->acceptor->close(ec);
  });
  auto deadline = std::chrono::steady_clock::now() + grace;
  // Idle connections are waiting for a request that will not be served:
  // close them. Busy ones finish their request and then close.
  while (impl_->live > 0 && std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard lock(impl_->conns_mu);
      for (auto& c : impl_->conns)
        if (!c.busy) {
          auto* sock = c.sock;
          asio::post(sock->get_executor(), [this, sock] {
            std::lock_guard l(impl_->conns_mu);
            boost::system::error_code e;
            for (auto& c2 : impl_->conns)
              if (c2.sock == sock && !c2.busy) sock->cancel(e);
          });
        }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& c : impl_->contexts) c->stop();
  std::lock_guard lock(impl_->stop_mu);
  impl_->stop_done = true;
  impl_->stop_cv.notify_all();
}

}  // namespace kiln::http
