#include "base/text.h"

#include <openssl/evp.h>
#include <rapidjson/encodings.h>
#include <rapidjson/memorystream.h>

#include <cstdint>
#include <cstring>

namespace kiln {
namespace {
struct Discard {
  void Put(char) {}
};
}  // namespace

bool IsUtf8(std::string_view s) {
  // ASCII, 8 bytes at a time, before the byte-wise check of the rest.
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, s.data() + i, 8);
    if (word & 0x8080808080808080ULL) break;
  }
  while (i < s.size() && static_cast<unsigned char>(s[i]) < 0x80) ++i;
  if (i == s.size()) return true;
  rapidjson::MemoryStream in(s.data() + i, s.size() - i);
  Discard out;
  while (in.Tell() < s.size() - i)
    if (!rapidjson::UTF8<>::Validate(in, out)) return false;
  return true;
}

std::string ValidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    // The longest well-formed sequence starting here: 1 to 4 bytes.
    size_t n = 0;
    for (size_t len = 1; len <= 4 && i + len <= s.size(); ++len)
      if (IsUtf8(s.substr(i, len))) {
        n = len;
        break;
      }
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string Base64(std::string_view s) {
  std::string out(4 * ((s.size() + 2) / 3), '\0');
  int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

}  // namespace kiln
