// Percent-encoding of a URL path segment or query value (RFC 3986
// unreserved characters pass through), the token rule of HTTP header
// names, and the one parser of the http(s) URLs Kiln sends requests to
// (push subscribers: checked when set, split when delivered). Pure;
// thread-safe.
#pragma once

#include <cctype>
#include <optional>
#include <string>
#include <string_view>

namespace kiln {

// An http:// or https:// URL split for sending a request to it.
struct HttpUrl {
  bool tls = false;
  std::string host;    // a name or an IPv4 address, or an IPv6 one without its brackets
  std::string port;    // 1-65535 in digits; 80 or 443 when the URL gives none
  std::string target;  // path and query, "/" at least; the fragment is dropped
  // "scheme://host:port": what a kept-alive connection can be reused for.
  std::string key() const { return (tls ? "https://" : "http://") + host + ":" + port; }
};

// `url` split, or nullopt unless it is http:// or https:// with a host of
// letters, digits, '-', '.' and '_' (or a bracketed IPv6 address), a port
// of 1-65535 in digits when a ':' is there, and no spaces or control bytes
// anywhere. User info before an '@' is passed over (never sent).
std::optional<HttpUrl> ParseHttpUrl(std::string_view url);

inline std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '_' || c == '.' || c == '~';
    if (unreserved) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// Whether `name` is a valid header name (an RFC 9110 token): no spaces,
// tabs, colons or controls, so that "Transfer-Encoding " cannot pass for
// another header than the one it names at a lenient receiver.
inline bool IsHeaderToken(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name)
    if (!(std::isalnum(c) ||
          std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos))
      return false;
  return true;
}

}  // namespace kiln
