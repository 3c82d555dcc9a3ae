// Percent-encoding of a URL path segment or query value (RFC 3986
// unreserved characters pass through), and the token rule of HTTP header
// names. Pure; thread-safe.
#pragma once

#include <cctype>
#include <string>
#include <string_view>

namespace kiln {

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
