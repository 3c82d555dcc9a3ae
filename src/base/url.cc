#include "base/url.h"

#include <algorithm>

namespace kiln {

std::optional<HttpUrl> ParseHttpUrl(std::string_view url) {
  if (std::any_of(url.begin(), url.end(), [](unsigned char c) { return c <= 0x20 || c == 0x7f; }))
    return std::nullopt;
  HttpUrl u;
  std::string_view rest;
  if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else if (url.starts_with("https://")) {
    u.tls = true;
    rest = url.substr(8);
  } else {
    return std::nullopt;
  }
  rest = rest.substr(0, rest.find('#'));  // a fragment is not sent, nor part of the host
  size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  if (slash == std::string_view::npos) {
    u.target = "/";
  } else {
    if (rest[slash] == '?') u.target = "/";
    u.target.append(rest.substr(slash));
  }
  if (size_t at = authority.rfind('@'); at != std::string_view::npos)
    authority.remove_prefix(at + 1);
  std::string_view host = authority, port;
  bool has_port = false;
  if (!authority.empty() && authority[0] == '[') {  // [v6]:port
    size_t close = authority.find(']');
    if (close == std::string_view::npos || close == 1) return std::nullopt;
    host = authority.substr(1, close - 1);
    if (host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos)
      return std::nullopt;
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return std::nullopt;
      port = authority.substr(close + 2);
      has_port = true;
    }
  } else {
    if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
      has_port = true;
    }
    if (host.empty() || !std::all_of(host.begin(), host.end(), [](unsigned char c) {
          return std::isalnum(c) || c == '-' || c == '.' || c == '_';
        }))
      return std::nullopt;
  }
  if (has_port) {
    // Digits only (not a service name), and not one that wraps.
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string_view::npos)
      return std::nullopt;
    int n = std::stoi(std::string(port));
    if (n < 1 || n > 65535) return std::nullopt;
  }
  u.host = std::string(host);
  u.port = has_port ? std::string(port) : (u.tls ? "443" : "80");
  return u;
}

}  // namespace kiln
