// Name lookups for the outbound HTTP client (push deliveries), off its io
// threads. Each distinct host and port is looked up once at a time, on a
// thread of its own: a name whose DNS hangs holds only the requests for
// that name, not every new connection of the client (asio's resolver runs
// one getaddrinfo at a time per io_context). Answers are kept for `ttl`,
// failures for `failure_ttl`, so that a subscriber on a dead domain costs
// one lookup per few seconds however many deliveries wait for it.
//
// Thread-safe. Owned by http::Client, which closes it (Close) before its io
// threads go away.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"

namespace kiln::http {

// Numeric addresses ("127.0.0.1", "::1") of a name.
using Addresses = std::vector<std::string>;

// getaddrinfo for TCP, addresses of the families configured here.
Result<Addresses> SystemLookup(const std::string& host, const std::string& port);

struct ResolverOptions {
  std::chrono::milliseconds ttl{30000};
  std::chrono::milliseconds failure_ttl{5000};
  // Lookups under way at once: all names, and names of one site (its
  // registrable domain by the Public Suffix List: a.x.example.co.uk and
  // b.x.example.co.uk are both x.example.co.uk's). Past
  // either a lookup fails at once, so that one tenant's hanging domains
  // cannot hold every lookup slot.
  size_t max_lookups = 256;
  size_t max_lookups_per_site = 4;
  // Blocking lookup, run on the lookup's own thread (tests replace it).
  std::function<Result<Addresses>(const std::string& host, const std::string& port)> lookup =
      SystemLookup;
};

class Resolver {
 public:
  explicit Resolver(ResolverOptions options = {});
  ~Resolver();  // Close()

  // Calls `done` exactly once with the addresses or why there are none: at
  // once from the cache, else on the lookup's thread when it ends. After
  // Close, `done` is not called for lookups still under way.
  using Done = std::function<void(Result<Addresses>)>;
  void Resolve(const std::string& host, const std::string& port, Done done);

  // Drops the callbacks of lookups under way; their threads end on their own.
  void Close();

 private:
  struct State;
  static void Finish(State& state, const std::string& host, const std::string& key,
                     Result<Addresses> answer);
  std::shared_ptr<State> state_;
};

}  // namespace kiln::http
