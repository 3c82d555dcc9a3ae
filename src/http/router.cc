#include "http/router.h"

#include <algorithm>
#include <array>
#include <stdexcept>

namespace kiln::http {
namespace {

// The segments of a path, without allocating: no route has more than
// kMaxSegments, so a longer path matches none (`n` is then past it). So
// does a path with an empty segment past its leading slashes ("a//b",
// "a/b/"): a script's empty id makes DELETE .../messages/ of
// DELETE .../messages/{id}, and that must not be the queue's clear.
constexpr size_t kMaxSegments = 16;
struct Segments {
  std::array<std::string_view, kMaxSegments> seg;
  size_t n = 0;
};

Segments Split(std::string_view path) {
  Segments out;
  size_t i = path.find_first_not_of('/');
  if (i == std::string_view::npos) return out;
  for (;;) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j == i) {  // empty
      out.n = kMaxSegments + 1;
      return out;
    }
    if (out.n < kMaxSegments) out.seg[out.n] = path.substr(i, j - i);
    ++out.n;
    if (j == path.size()) return out;
    i = j + 1;
  }
}

int Hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool PercentDecode(std::string_view s, bool plus_is_space, std::string* out) {
  out->clear();
  out->reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return false;
      int hi = Hex(s[i + 1]), lo = Hex(s[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out->push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out->push_back(' ');
    } else {
      out->push_back(c);
    }
  }
  return true;
}

void Router::Add(std::string method, std::string pattern, Handler handler) {
  Route r{std::move(method), {}, std::move(handler)};
  auto segs = Split(pattern);
  if (segs.n > kMaxSegments) throw std::logic_error("route with too many segments: " + pattern);
  for (size_t i = 0; i < segs.n; ++i) r.segments.emplace_back(segs.seg[i]);
  by_length_.resize(std::max(by_length_.size(), segs.n + 1));
  by_length_[segs.n].push_back(routes_.size());
  most_literal_.resize(by_length_.size());
  size_t literal = 0;
  for (const auto& p : r.segments) literal += p[0] != ':';
  most_literal_[segs.n] = std::max(most_literal_[segs.n], literal);
  routes_.push_back(std::move(r));
}

Router::Match Router::Find(Request& req, const Handler** handler) const {
  auto segs = Split(req.path);
  if (segs.n >= by_length_.size()) return Match::kNoPath;
  // A path is the route's with the most literal segments that matches it:
  // "/tasks/webhook" (POST) is not a task id for "/tasks/:task" (GET), so a
  // GET there is 405, not "Task not found". Among those, the method's.
  bool path_matched = false;
  size_t most_literal = 0;
  const Route* best = nullptr;
  size_t best_literal = 0;
  for (size_t index : by_length_[segs.n]) {
    const auto& r = routes_[index];
    // From the last segment: routes mostly share their first ones.
    bool ok = true;
    size_t literal = 0;
    for (size_t i = segs.n; i-- > 0 && ok;) {
      const auto& p = r.segments[i];
      if (p[0] == ':') continue;
      if (p != segs.seg[i]) ok = false;
      ++literal;
    }
    if (!ok) continue;
    path_matched = true;
    most_literal = std::max(most_literal, literal);
    // HEAD is a GET without the body (the server leaves the body out).
    if (r.method != req.method && !(r.method == "GET" && req.method == "HEAD")) continue;
    if (!best || literal > best_literal) {  // the first added wins a tie
      best = &r;
      best_literal = literal;
      if (literal == most_literal_[segs.n]) break;  // no route of this length has more
    }
  }
  if (!best || best_literal < most_literal) return path_matched ? Match::kNoMethod : Match::kNoPath;
  req.params.clear();
  for (size_t i = 0; i < segs.n; ++i) {
    const auto& p = best->segments[i];
    if (p[0] != ':') continue;
    std::string decoded;
    if (!PercentDecode(segs.seg[i], false, &decoded)) return Match::kBadPath;
    req.params.emplace_back(p.substr(1), std::move(decoded));
  }
  *handler = &best->handler;
  return Match::kFound;
}

}  // namespace kiln::http
