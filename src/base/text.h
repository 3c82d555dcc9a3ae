// Byte strings as text: whether they are UTF-8, and base64 for the ones
// that must travel inside JSON but are not. Pure functions; any thread.
#pragma once

#include <string>
#include <string_view>

namespace kiln {

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code
// points past U+10FFFF).
bool IsUtf8(std::string_view s);

// `s` with each byte that is not part of well-formed UTF-8 replaced by
// U+FFFD: text that must go into JSON whatever it holds.
std::string ValidUtf8(std::string_view s);

// Standard base64 (RFC 4648, with padding).
std::string Base64(std::string_view s);

}  // namespace kiln
