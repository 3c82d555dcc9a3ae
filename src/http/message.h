// HTTP request and response as plain values, free of Beast types, so that
// handlers and their callers need not include Beast. Thread-compatible.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kiln {
class FileRange;  // base/file_range.h
}

namespace kiln::http {

struct Request {
  std::string method;                                       // upper case, e.g. "GET"
  std::string target;                                       // as received, with the query string
  std::string path;                                         // without the query string, not decoded
  std::unordered_map<std::string, std::string> query;       // percent-decoded
  std::vector<std::pair<std::string, std::string>> params;  // filled by the router, decoded
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case
  std::string body;
  std::string remote;  // peer address
  // No other connection is open on the io thread serving this one, so a
  // handler may block that thread in a disk write (a synced commit)
  // without holding back anyone else's requests.
  bool sole_connection = false;
  // What ServerOptions::check_body handed over as it let the body come (an
  // upload slot, say), let go with the Request when the handler is done.
  // Null when it was not asked (the whole request came at once) or handed
  // nothing.
  std::shared_ptr<void> admission;
  int socket_fd = -1;          // the connection's, for PeerClosed (-1: none, as in tests)
  bool more_buffered = false;  // the client's next request has begun arriving

  // Whether the client has closed or reset the connection since it sent
  // this request (a look at the socket, not a wait): for handlers that wait
  // long (a reserve's `wait`), so that they stop rather than hand messages
  // to no one. False when unknown, or when more of the client's requests
  // are still unread.
  bool PeerClosed() const;

  // The first header named `name` (lower case), or "".
  std::string_view Header(std::string_view name) const {
    for (const auto& [k, v] : headers)
      if (k == name) return v;
    return {};
  }
  std::string_view Param(std::string_view name) const {
    for (const auto& [k, v] : params)
      if (k == name) return v;
    return {};
  }
  const std::string* Query(const std::string& name) const {
    auto it = query.find(name);
    return it == query.end() ? nullptr : &it->second;
  }
};

struct Response {
  Response(int status_code = 200, std::string body_text = {})
      : status(status_code), body(std::move(body_text)) {}

  int status;
  std::string body;
  // When set, the body instead of `body`: sent from the file as the client
  // takes it, never held in memory.
  std::shared_ptr<const FileRange> file;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
};

// Appends `s` to a header being written, without CR, LF or any other
// control byte but HT: a name or value from a handler, a subscriber or a
// message cannot end the header early and add lines of its own (response
// splitting, request smuggling), nor carry a NUL a peer may cut at.
inline void AppendHeaderText(std::string_view s, std::string* out) {
  auto control = [](char c) {
    auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && u != '\t') || u == 0x7f;
  };
  size_t from = 0;
  for (size_t i = 0; i < s.size(); ++i)
    if (control(s[i])) {
      out->append(s.substr(from, i - from));
      from = i + 1;
    }
  out->append(s.substr(from));
}

// Percent-decodes `s` ('+' stays '+' in paths; in queries it means a space).
// Returns false on a malformed escape.
bool PercentDecode(std::string_view s, bool plus_is_space, std::string* out);

}  // namespace kiln::http
