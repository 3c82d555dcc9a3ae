// Byte encodings of the embedded store's keys and values (format version 1,
// docs/storage-format.md). Pure functions; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/error.h"
#include "store/records.h"

namespace kiln::store::rocks {

std::string EncodeU64(uint64_t v);  // 8 bytes, big-endian: keys sort numerically
uint64_t DecodeU64(std::string_view b);
std::string MessageKey(uint64_t qid, uint64_t id);
// The same 16 bytes without a heap allocation (a std::string of 16 is one
// byte past the short-string buffer), for keys written on every request.
std::array<char, 16> MessageKeyBytes(uint64_t qid, uint64_t id);

std::string EncodeState(const MessageState& s);
constexpr size_t kStateBytes = 29;  // version, visible_at, expires_at, reserved_count, reservation
std::array<char, kStateBytes> EncodeStateBytes(const MessageState& s);
Result<MessageState> DecodeState(uint64_t id, std::string_view b);

std::string EncodeQueue(const QueueRecord& q);
Result<QueueRecord> DecodeQueue(std::string_view b);
std::string EncodeProject(const ProjectRecord& p);
Result<ProjectRecord> DecodeProject(std::string_view b);
std::string EncodeToken(const TokenRecord& t);
Result<TokenRecord> DecodeToken(std::string_view b);

}  // namespace kiln::store::rocks
