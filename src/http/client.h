// An asynchronous HTTP(S) client for outbound requests (push delivery):
// pooled keep-alive connections per scheme, host and port, a whole-request
// timeout, TLS with certificate and host-name verification, and an optional
// guard against loopback and private addresses (SSRF). Runs its own io
// threads; host names are looked up by an http::Resolver. Post may be called from any thread;
// `done` runs on a client thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "http/resolver.h"

namespace kiln::http {

struct ClientOptions {
  std::chrono::milliseconds timeout{10000};  // connect + send + answer
  std::string ca_file;                       // extra CA certificates to trust (PEM)
  bool forbid_private = false;               // refuse loopback, private and link-local addresses
  size_t max_idle_per_host = 32;
  // Idle connections are closed after idle_timeout, and past max_idle (per
  // io thread, all hosts together) the one idle longest is closed: open
  // sockets stay bounded however many subscriber hosts come and go.
  std::chrono::milliseconds idle_timeout{30000};
  size_t max_idle = 256;
  size_t threads = 1;                       // io threads, each with its own idle connections
  std::string thread_name = "kiln-client";  // as top -H shows them
  ResolverOptions resolver;                 // name lookups, shared by the threads
};

class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();

  using Headers = std::vector<std::pair<std::string, std::string>>;
  // `done(status, "")` with the answer's status, or `done(0, why)` when no
  // answer came (bad URL, refused, timeout, TLS failure, forbidden address).
  using Done = std::function<void(int status, std::string error)>;
  // Requests with the same `affinity` run on the same thread, so that
  // their answers are handled one at a time, not contending for the
  // caller's locks from several threads.
  void Post(std::string url, Headers headers, std::string body, Done done, uint64_t affinity);

 private:
  struct Impl;
  struct Pool;
  std::unique_ptr<Pool> pool_;
};

}  // namespace kiln::http
