// Maps a method and a path to a handler. Patterns are literal segments and
// ":name" captures, e.g. "/3/projects/:project/queues/:queue". Built once at
// start-up, then read-only: safe to share between threads.
#pragma once

// clang-format off
#include <utility>  // before awaitable.hpp: Boost 1.74 uses std::exchange without it
#include <boost/asio/awaitable.hpp>
// clang-format on
#include <functional>
#include <string>
#include <vector>

#include "http/message.h"

namespace kiln::http {

using Handler = std::function<boost::asio::awaitable<Response>(Request&)>;

class Router {
 public:
  void Add(std::string method, std::string pattern, Handler handler);

  enum class Match { kFound, kNoPath, kNoMethod, kBadPath };
  // Finds the route for `req`, fills req.params (decoded) and sets *handler.
  // A path belongs to the routes with the most literal segments matching it
  // (of those, the first added with the request's method).
  // kNoPath: no pattern matches (404); kNoMethod: the path matches with
  // another method (405); kBadPath: a malformed percent escape (400).
  Match Find(Request& req, const Handler** handler) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    Handler handler;
  };
  std::vector<Route> routes_;                   // in the order added
  std::vector<std::vector<size_t>> by_length_;  // indexes into routes_ by segment count
  std::vector<size_t> most_literal_;  // by segment count: the most literal segments of a route
};

}  // namespace kiln::http
