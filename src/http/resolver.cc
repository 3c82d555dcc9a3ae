#include "http/resolver.h"

#include <arpa/inet.h>
#include <libpsl.h>
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>

#include "base/thread_name.h"

namespace kiln::http {

Result<Addresses> SystemLookup(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* list = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &list);
  if (rc != 0)
    return Fail(Error::Unavailable("cannot resolve " + host + ": " +
                                   (rc == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(rc))));
  Addresses out;
  for (addrinfo* a = list; a; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    const void* addr =
        a->ai_family == AF_INET6
            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr)
            : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr);
    if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) &&
        inet_ntop(a->ai_family, addr, text, sizeof text))
      out.emplace_back(text);
  }
  freeaddrinfo(list);
  if (out.empty()) return Fail(Error::Unavailable("cannot resolve " + host + ": no address"));
  return out;
}

struct Resolver::State {
  ResolverOptions options;
  std::mutex mu;
  bool closed = false;
  struct Cached {
    std::chrono::steady_clock::time_point until;
    Result<Addresses> answer;
  };
  std::map<std::string, Cached> cache;               // by host + " " + port
  std::map<std::string, std::vector<Done>> waiting;  // lookups under way, and who waits
  std::map<std::string, size_t> per_site;            // lookups under way by site
};

namespace {
constexpr size_t kMaxCached = 4096;

// A host's registrable domain by the Public Suffix List ("x.example.co.uk"
// of "a.b.x.example.co.uk"), so that one owner's names share one cap and
// every owner under co.uk does not; the host itself when it has none (an
// address, a bare suffix). The list: the publicsuffix package's, when
// installed and newer than libpsl's built-in one.
// Without a list (libpsl built without one, none installed), the last two
// labels, as a guess that errs towards one cap for more names.
std::string SiteOf(const std::string& host) {
  static const psl_ctx_t* const psl = [] {
    const psl_ctx_t* p = psl_latest(nullptr);
    if (!p) p = psl_builtin();
    if (!p) spdlog::warn("no Public Suffix List: name lookups are capped by their last two labels");
    return p;
  }();
  std::string lower = host;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!lower.empty() && lower.back() == '.') lower.pop_back();
  if (psl) {
    const char* site = psl_registrable_domain(psl, lower.c_str());
    return site ? std::string(site) : lower;
  }
  size_t last = lower.rfind('.');
  if (last == std::string::npos || last == 0) return lower;
  size_t before = lower.rfind('.', last - 1);
  return before == std::string::npos ? lower : lower.substr(before + 1);
}
}  // namespace

// Keeps the answer and hands it to those waiting for it. Under the lock, so
// that Close (then the client's io threads going away) waits for callbacks
// under way; they only post to the client, never call back in here.
void Resolver::Finish(State& state, const std::string& host, const std::string& key,
                      Result<Addresses> answer) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(state.mu);
  if (state.cache.size() >= kMaxCached)
    std::erase_if(state.cache, [&](const auto& c) { return c.second.until <= now; });
  if (state.cache.size() >= kMaxCached) state.cache.clear();
  state.cache[key] = {now + (answer ? state.options.ttl : state.options.failure_ttl), answer};
  if (auto p = state.per_site.find(SiteOf(host)); p != state.per_site.end() && --p->second == 0)
    state.per_site.erase(p);
  auto w = state.waiting.find(key);
  if (w == state.waiting.end()) return;  // closed meanwhile
  for (auto& d : w->second) d(answer);
  state.waiting.erase(w);
}

Resolver::Resolver(ResolverOptions options) : state_(std::make_shared<State>()) {
  state_->options = std::move(options);
}

Resolver::~Resolver() { Close(); }

void Resolver::Close() {
  std::lock_guard lock(state_->mu);
  state_->closed = true;
  state_->waiting.clear();
}

void Resolver::Resolve(const std::string& host, const std::string& port, Done done) {
  std::string key = host + " " + port;
  auto now = std::chrono::steady_clock::now();
  std::unique_lock lock(state_->mu);
  if (auto c = state_->cache.find(key); c != state_->cache.end()) {
    if (now < c->second.until) {
      Result<Addresses> answer = c->second.answer;
      lock.unlock();
      return done(std::move(answer));
    }
    state_->cache.erase(c);
  }
  if (auto w = state_->waiting.find(key); w != state_->waiting.end()) {
    w->second.push_back(std::move(done));
    return;
  }
  std::string site = SiteOf(host);
  auto of_site = state_->per_site.find(site);
  if (state_->closed || state_->waiting.size() >= state_->options.max_lookups ||
      (of_site != state_->per_site.end() &&
       of_site->second >= state_->options.max_lookups_per_site)) {
    bool closed = state_->closed;
    lock.unlock();
    return done(Fail(
        Error::Unavailable("cannot resolve " + host + ": " +
                           (closed ? "the client is stopping" : "too many name lookups at once"))));
  }
  ++state_->per_site[site];
  state_->waiting[key].push_back(std::move(done));
  lock.unlock();
  // The thread holds the state, not the resolver: it may outlive both the
  // resolver and the client (a lookup that hangs ends when the system's
  // resolver gives up).
  try {
    std::thread([state = state_, key, host, port] {
      NameThisThread("kiln-resolve");
      Finish(*state, host, key, state->options.lookup(host, port));
    }).detach();
  } catch (const std::system_error& e) {  // no thread to be had
    Finish(*state_, host, key,
           Fail(Error::Unavailable("cannot resolve " + host + ": " + e.what())));
  }
}

}  // namespace kiln::http
