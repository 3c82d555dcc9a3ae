#include "base/text.h"

#include <openssl/evp.h>
#include <rapidjson/encodings.h>
#include <rapidjson/memorystream.h>

namespace kiln {
namespace {
struct Discard {
  void Put(char) {}
};
}  // namespace

bool IsUtf8(std::string_view s) {
  rapidjson::MemoryStream in(s.data(), s.size());
  Discard out;
  while (in.Tell() < s.size())
    if (!rapidjson::UTF8<>::Validate(in, out)) return false;
  return true;
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
