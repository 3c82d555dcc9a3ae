// JSON in and out of the API, over RapidJSON. Readers check types and turn
// every mismatch into InvalidArgument with the field's name. Include only in
// api/*.cc: RapidJSON is heavy. Thread-compatible.
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"
#include "base/text.h"

namespace kiln::api {

// A RapidJSON output stream that appends to a std::string.
class StringOut {
 public:
  using Ch = char;
  explicit StringOut(std::string* out) : out_(out) {}
  void Put(char c) { out_->push_back(c); }
  void Flush() {}

 private:
  std::string* out_;
};

using JsonValue = rapidjson::Value;
// Its nesting stack comes from a pool on the stack of Json() below.
using JsonWriter = rapidjson::Writer<StringOut, rapidjson::UTF8<>, rapidjson::UTF8<>,
                                     rapidjson::MemoryPoolAllocator<>>;

// A parsed request body, read through its root object. Its nodes and the
// parser's stack come from small pools inside it, one allocation for a
// usual request, where a plain rapidjson::Document takes a 64 KiB chunk
// from malloc for every parse and grows its stack with malloc.
class JsonBody {
 public:
  const JsonValue& root() const { return state_->doc; }
  operator const JsonValue&() const { return root(); }  // NOLINT: reads like the root

 private:
  friend Result<JsonBody> ParseObject(const std::string& body);
  using Pool = rapidjson::MemoryPoolAllocator<>;
  struct State {
    char buffer[2048];
    char stack_buffer[1536];
    Pool pool{buffer, sizeof buffer};
    Pool stack_pool{stack_buffer, sizeof stack_buffer, 16 << 10};  // then 16 KiB chunks
    rapidjson::GenericDocument<rapidjson::UTF8<>, Pool, Pool> doc{&pool, 512, &stack_pool};
  };
  std::unique_ptr<State> state_ = std::make_unique<State>();
};

// Parses a request body; an empty body counts as {}. The root must be an
// object. The parser does not recurse, so any nesting is safe to read.
Result<JsonBody> ParseObject(const std::string& body);

// Whether arrays and objects in `v` nest at most `max_depth` deep. Writing
// a value back out (JsonWriter, Accept) recurses one frame a level: check
// a request's value with this before it is written.
inline constexpr int kMaxJsonDepth = 64;
bool NestsWithin(const JsonValue& v, int max_depth);

// Optional members: absent or null gives nullopt; a wrong type is an error.
Result<std::optional<int64_t>> GetInt(const JsonValue& obj, const char* key);
Result<std::optional<std::string>> GetString(const JsonValue& obj, const char* key);
Result<std::optional<bool>> GetBool(const JsonValue& obj, const char* key);
// `v` as an int, or InvalidArgument naming `key` when it does not fit one
// (so that a range check after the narrowing cannot be passed by wrapping).
Result<int> NarrowInt(const char* key, int64_t v);
// Object or array member; nullptr when absent or null.
Result<const JsonValue*> GetObject(const JsonValue& obj, const char* key);
Result<const JsonValue*> GetArray(const JsonValue& obj, const char* key);

// An integer from a query-string value; InvalidArgument names `key`.
Result<int64_t> ParseIntParam(const char* key, const std::string& v);

// A string value; bytes that are not UTF-8 (a push message's binary body,
// a raw webhook payload) become U+FFFD, so that the answer stays JSON.
inline void WriteString(JsonWriter& w, std::string_view s) {
  if (IsUtf8(s)) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    return;
  }
  std::string valid = ValidUtf8(s);
  w.String(valid.data(), static_cast<rapidjson::SizeType>(valid.size()));
}

// Builds a JSON text: Json([](JsonWriter& w) { w.StartObject(); ... }).
template <typename F>
std::string Json(F&& f) {
  std::string out;
  out.reserve(256);
  StringOut os(&out);
  char stack[1024];  // the writer's nesting stack (512 bytes) and the pool's header
  rapidjson::MemoryPoolAllocator<> pool(stack, sizeof stack, 4 << 10);
  JsonWriter w(os, &pool);
  f(w);
  return out;
}

// {"msg": text}
std::string MsgJson(std::string_view text);

}  // namespace kiln::api
