// The HTTP/1.1 server: Boost.Beast with C++20 coroutines, one io_context and
// one thread per core, keep-alive and pipelining, limits on header and body
// size, idle and read timeouts, and a graceful stop. Knows nothing of queues.
// Start/Stop from one controlling thread; handlers run on the io threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "http/router.h"

namespace boost::asio {
class io_context;
}

namespace kiln::http {

// Bodies up to this long are read before anything checks who sent them.
inline constexpr size_t kUncheckedBody = 64 << 10;

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;  // 0: any free port
  int threads = 0;       // 0: one per core
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1 << 20;
  // Requests whose path (without the query) this accepts may have bodies up
  // to max_upload_bytes (code uploads).
  std::function<bool(std::string_view path)> is_upload;
  // Asked, with the request's head, whether it may send its body, when that
  // is an upload, chunked, or longer than kUncheckedBody: an answer instead
  // (say, a 401) is sent before any of the body is read, and the
  // connection closed. What it puts in `*admission` the handler finds in
  // Request::admission, let go when the handler is done. Unset: any may.
  std::function<std::optional<Response>(const Request& head, std::shared_ptr<void>* admission)>
      check_body;
  size_t max_upload_bytes = 64 << 20;
  std::chrono::seconds read_timeout{30};  // to receive one whole request
  std::chrono::seconds idle_timeout{75};  // between requests on a keep-alive connection
  bool access_log = true;
  // Open connections at most: past it a new one is closed at once (each may
  // hold a request of up to kUncheckedBody before its token is checked).
  size_t max_connections = 10000;
  // Open connections from one client address at most, so that one client
  // cannot take every connection: past it its new ones are closed at once.
  size_t max_connections_per_address = 5000;
};

class Server {
 public:
  Server(ServerOptions options, const Router& router);
  ~Server();

  // Binds, calls `bound` with the bound port (when set: what must be in
  // place before the first client can connect, such as iron.json; its
  // error is returned and nothing listens), then listens. Returns the
  // bound port. Errors: Unavailable, or `bound`'s.
  Result<uint16_t> Listen(const std::function<Result<void>(uint16_t port)>& bound = nullptr);
  // Runs the io threads until Stop() finishes; blocks.
  void Run();
  // Stops accepting, closes idle connections, lets in-flight requests
  // finish (up to `grace`), then ends Run. Safe to call from any thread.
  void Stop(std::chrono::milliseconds grace = std::chrono::seconds(10));

  bool stopping() const { return stopping_; }
  // Any of the server's io contexts (for timers owned by callers).
  boost::asio::io_context& context(size_t i);
  size_t context_count() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stopping_{false};
};

}  // namespace kiln::http
