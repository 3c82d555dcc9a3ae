// multipart/form-data bodies (RFC 7578) as the Iron clients send them for a
// code upload (iron-api.md §3.2): parts found by their name=, content taken
// as is. Pure; thread-safe.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "base/error.h"

namespace kiln::api {

// Parts by name. InvalidArgument when `content_type` has no boundary or the
// body does not follow it.
Result<std::map<std::string, std::string>> ParseMultipart(std::string_view content_type,
                                                          std::string_view body);

}  // namespace kiln::api
