// How CLI commands print replies: raw JSON with --json, readable text
// otherwise; on failure Iron's {"msg"} on stderr with exit code 1 (2 when
// the server cannot be reached), and with --json also as JSON on stdout.
#pragma once

#include <rapidjson/document.h>

#include <cstdint>
#include <functional>
#include <string>

#include "cli/client.h"

namespace kiln::cli {

// Prints `reply` and returns the process exit code. On success with
// json=false, `pretty` prints the parsed body.
int Print(const Result<Reply>& reply, bool json,
          const std::function<void(const rapidjson::Document&)>& pretty);

std::string JsonString(const std::string& s);  // a quoted, escaped JSON string

// Readers of a reply's fields for `pretty`. A reply is not trusted to have
// Kiln's shape (another server, a proxy's page, a newer Kiln): a missing
// field, a field of another type, or `o` not an object reads as "", 0,
// false, a null value or an empty array.
const char* Str(const rapidjson::Value& o, const char* key);
int64_t Int(const rapidjson::Value& o, const char* key);
bool Bool(const rapidjson::Value& o, const char* key);
const rapidjson::Value& Field(const rapidjson::Value& o, const char* key);
rapidjson::Value::ConstArray Array(const rapidjson::Value& o, const char* key);
bool Has(const rapidjson::Value& o, const char* key);

}  // namespace kiln::cli
