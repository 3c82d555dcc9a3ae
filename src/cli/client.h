// The CLI's connection to a Kiln server: where it is and which credentials
// to send, found the way the Iron tools find them (flags, then IRON_* env,
// then iron.json in the working directory and in ~), and a blocking HTTP
// call. One thread; not thread-safe.
#pragma once

#include <string>

#include "base/error.h"

namespace kiln::cli {

struct Connection {
  std::string scheme;  // "" until resolved: then from the settings, else http
  std::string host;
  std::string port;
  std::string project_id;
  std::string token;
};

// Fills the fields `c` leaves empty the way iron_core does for that
// product (contract §4: $IRON_<P>_CONFIG / $IRON_CONFIG files, IRON_<P>_*
// then IRON_* variables, iron-<p>.json, iron_<p>.json, iron.json with or
// without a dot in the working directory and in ~); defaults to
// http://127.0.0.1:8080. Exits 2, saying where to give one, when no
// project id is found.
enum class Product { kMq, kWorker };
Connection Resolve(Connection c, Product product = Product::kMq);

struct Reply {
  int status = 0;
  std::string body;
};

// Sends one request (a body, "{}" when empty, on all but GET). Errors:
// Unavailable when the server cannot be reached.
Result<Reply> Call(const Connection& c, const std::string& method, const std::string& target,
                   const std::string& body = "",
                   const std::string& content_type = "application/json");

// Percent-encodes a path segment.
std::string Escape(const std::string& s);

}  // namespace kiln::cli
