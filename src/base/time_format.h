// RFC 3339 UTC timestamps ("2024-01-02T03:04:05Z"), as the Iron clients
// expect them (iron-api.md §1.4). Pure; thread-safe.
#pragma once

#include <ctime>
#include <string>

#include "base/clock.h"

namespace kiln {

inline std::string FormatRfc3339(TimeMs ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace kiln
