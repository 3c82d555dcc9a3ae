// The one place where an Error becomes an HTTP status and Iron's
// {"msg": ...} body (docs/http-api.md has the table). Thread-safe.
#pragma once

#include "base/error.h"
#include "http/message.h"

namespace kiln::api {

int StatusFor(ErrorCode code);
http::Response ErrorResponse(const Error& e);

}  // namespace kiln::api
