// How CLI commands print replies: raw JSON with --json, readable text
// otherwise, and Iron's {"msg"} on stderr with exit code 1 on failure.
#pragma once

#include <rapidjson/document.h>

#include <functional>
#include <string>

#include "cli/client.h"

namespace kiln::cli {

// Prints `reply` and returns the process exit code. On success with
// json=false, `pretty` prints the parsed body.
int Print(const Result<Reply>& reply, bool json,
          const std::function<void(const rapidjson::Document&)>& pretty);

std::string JsonString(const std::string& s);  // a quoted, escaped JSON string

}  // namespace kiln::cli
