// Error values and Result<T>, Kiln's convention for expected failures.
// Every layer returns Result<T>; only api/errors.cc turns an Error into an
// HTTP status. Plain values; thread-compatible.
#pragma once

#include <string>
#include <tl/expected.hpp>
#include <utility>

namespace kiln {

enum class ErrorCode {
  kInvalidArgument,   // bad input: 400
  kUnauthenticated,   // missing or bad token: 401
  kPermissionDenied,  // stale reservation, wrong project: 403
  kNotFound,          // unknown queue, message, project: 404
  kAlreadyExists,     // 409
  kTooLarge,          // body over a limit: 413
  kUnavailable,       // shutting down, store not writable: 503
  kInternal,          // a broken invariant or a store failure: 500
};

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Error InvalidArgument(std::string m) {
    return {ErrorCode::kInvalidArgument, std::move(m)};
  }
  static Error Unauthenticated(std::string m) {
    return {ErrorCode::kUnauthenticated, std::move(m)};
  }
  static Error PermissionDenied(std::string m) {
    return {ErrorCode::kPermissionDenied, std::move(m)};
  }
  static Error NotFound(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }
  static Error AlreadyExists(std::string m) { return {ErrorCode::kAlreadyExists, std::move(m)}; }
  static Error TooLarge(std::string m) { return {ErrorCode::kTooLarge, std::move(m)}; }
  static Error Unavailable(std::string m) { return {ErrorCode::kUnavailable, std::move(m)}; }
  static Error Internal(std::string m) { return {ErrorCode::kInternal, std::move(m)}; }

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  ErrorCode code_;
  std::string message_;
};

template <typename T>
using Result = tl::expected<T, Error>;

// Result<void> success value: `return Ok();`.
inline Result<void> Ok() { return {}; }

inline tl::unexpected<Error> Fail(Error e) { return tl::unexpected<Error>(std::move(e)); }

}  // namespace kiln
