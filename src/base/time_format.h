// RFC 3339 UTC timestamps ("2024-01-02T03:04:05Z"), as the Iron clients
// expect them (iron-api.md §1.4). Pure; thread-safe.
#pragma once

#include <cstdio>
#include <ctime>
#include <optional>
#include <string>

#include "base/clock.h"

namespace kiln {

inline std::string FormatRfc3339(TimeMs ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[48];  // a four-digit year always (strftime's %Y does not pad)
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

// Parses "2024-01-02T03:04:05Z", with optional fractional seconds and a
// "+01:00"-style offset instead of Z (a space for the T is accepted too).
inline std::optional<TimeMs> ParseRfc3339(const std::string& s) {
  int y, mo, d, h, mi, n = 0;
  double sec;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%lf%n", &y, &mo, &d, &h, &mi, &sec, &n) !=
          6 ||
      n == 0)
    return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || !(sec >= 0 && sec < 61))
    return std::nullopt;  // (NaN seconds fail the last test)
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  TimeMs ms = static_cast<TimeMs>(timegm(&tm)) * 1000 + static_cast<TimeMs>(sec * 1000);
  std::string zone = s.substr(static_cast<size_t>(n));
  if (zone == "Z" || zone == "z") return ms;
  int oh, om;
  char sign;
  if (zone.size() == 6 && std::sscanf(zone.c_str(), "%c%2d:%2d", &sign, &oh, &om) == 3 &&
      (sign == '+' || sign == '-'))
    return ms - (sign == '+' ? 1 : -1) * (oh * 3600 + om * 60) * TimeMs{1000};
  return std::nullopt;
}

}  // namespace kiln
