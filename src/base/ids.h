// Identifiers and secrets: 24-hex project ids (ObjectId-shaped, as the Ruby
// clients require), monotonic numeric message ids, random tokens and their
// SHA-256 hashes. Thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kiln {

// A fresh 24-hex-character id laid out as MongoDB's ObjectId: 4 bytes of
// seconds, 5 random bytes for this process, a 3-byte counter. Ids made by
// one process sort in the order they were made, so lists ordered by id
// (codes, tasks, schedules) are in creation order within a second too.
// Not secret: access is checked by token.
std::string NewObjectId(int64_t now_ms);
bool IsObjectId(std::string_view s);

// `n` random bytes from the OS's CSPRNG, hex-encoded (2n characters).
std::string RandomHex(size_t n);
// 64 bits from the same CSPRNG, drawn in batches per thread.
uint64_t RandomU64();

// Lower-case hex SHA-256 of `s`.
std::string Sha256Hex(std::string_view s);
// Lower-case hex SHA-256 of a regular file's bytes, read in chunks; "" when
// it cannot be read (or is not a regular file).
std::string Sha256FileHex(const std::string& path);
// Lower-case hex MD5 of `s`: a checksum as Iron shows it, not for security.
std::string Md5Hex(std::string_view s);

std::string HexU64(uint64_t v);  // 16 hex digits
bool ParseHexU64(std::string_view s, uint64_t* out);
bool ParseU64(std::string_view s, uint64_t* out);  // decimal

}  // namespace kiln
