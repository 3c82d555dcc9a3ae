#include "api/multipart.h"

#include <cctype>

namespace kiln::api {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The value of `key=` in a header such as Content-Disposition, quoted or not.
std::string Param(std::string_view header, std::string_view key) {
  std::string lower = Lower(header);
  size_t at = 0;
  for (;;) {
    at = lower.find(std::string(key) + "=", at);
    if (at == std::string::npos) return "";
    if (at == 0 || lower[at - 1] == ';' || lower[at - 1] == ' ') break;
    at += key.size();
  }
  size_t start = at + key.size() + 1;
  if (start < header.size() && header[start] == '"') {
    size_t end = header.find('"', start + 1);
    return std::string(header.substr(
        start + 1, end == std::string_view::npos ? std::string_view::npos : end - start - 1));
  }
  size_t end = header.find(';', start);
  std::string v(
      header.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
}

}  // namespace

Result<std::map<std::string, std::string>> ParseMultipart(std::string_view content_type,
                                                          std::string_view body) {
  if (Lower(content_type).rfind("multipart/form-data", 0) != 0)
    return Fail(Error::InvalidArgument("Content-Type must be multipart/form-data"));
  std::string boundary = Param(content_type, "boundary");
  if (boundary.empty()) return Fail(Error::InvalidArgument("multipart body without a boundary"));
  std::string delim = "--" + boundary;
  std::map<std::string, std::string> parts;
  size_t pos = body.find(delim);
  if (pos == std::string_view::npos)
    return Fail(Error::InvalidArgument("malformed multipart body"));
  for (;;) {
    pos += delim.size();
    if (body.substr(pos, 2) == "--") return parts;  // the closing delimiter
    if (body.substr(pos, 2) != "\r\n")
      return Fail(Error::InvalidArgument("malformed multipart body"));
    pos += 2;
    size_t headers_end = body.find("\r\n\r\n", pos);
    if (headers_end == std::string_view::npos)
      return Fail(Error::InvalidArgument("malformed multipart part"));
    std::string_view headers = body.substr(pos, headers_end - pos);
    size_t content = headers_end + 4;
    size_t next = body.find("\r\n" + delim, content);
    if (next == std::string_view::npos)
      return Fail(Error::InvalidArgument("multipart body is not closed"));
    std::string name;
    size_t line = 0;
    while (line < headers.size()) {
      size_t eol = headers.find("\r\n", line);
      std::string_view h =
          headers.substr(line, eol == std::string_view::npos ? std::string_view::npos : eol - line);
      if (Lower(h.substr(0, 20)) == "content-disposition:") name = Param(h, "name");
      if (eol == std::string_view::npos) break;
      line = eol + 2;
    }
    if (!name.empty()) parts[name] = std::string(body.substr(content, next - content));
    pos = next + 2;
  }
}

}  // namespace kiln::api
