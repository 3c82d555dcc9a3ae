// Reads the caller's token from a request (`Authorization: OAuth <token>`,
// also `Bearer`, or `?oauth=`) and checks it against a project. Thread-safe.
#pragma once

#include <string>

#include "access/access.h"
#include "http/message.h"

namespace kiln::api {

std::string TokenOf(const http::Request& req);

// The principal when the request's token may act on `project_id`: the
// header's, or else the one in `?oauth=` (a webhook sender may add its own
// Authorization header). Unauthenticated for a missing, unknown or other
// project's token; NotFound when an admin names a project that does not
// exist.
Result<access::Principal> Authorize(access::Access& access, const http::Request& req,
                                    const std::string& project_id);
// The principal when the request carries an admin token.
Result<access::Principal> AuthorizeAdmin(access::Access& access, const http::Request& req);

}  // namespace kiln::api
