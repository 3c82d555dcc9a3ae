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
// Every field is its exact number of digits and in range for its month
// ("2031-02-29" is no date): nothing is normalised into another time.
inline std::optional<TimeMs> ParseRfc3339(const std::string& s) {
  auto digits = [&](size_t at, size_t n, int* out) {
    if (at + n > s.size()) return false;
    int v = 0;
    for (size_t i = at; i < at + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
  };
  int y, mo, d, h, mi, sec;
  if (!digits(0, 4, &y) || s.size() < 19 || s[4] != '-' || !digits(5, 2, &mo) || s[7] != '-' ||
      !digits(8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(11, 2, &h) ||
      s[13] != ':' || !digits(14, 2, &mi) || s[16] != ':' || !digits(17, 2, &sec))
    return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)  // 60: a leap second
    return std::nullopt;
  size_t at = 19;
  TimeMs frac_ms = 0;
  if (at < s.size() && s[at] == '.') {
    size_t from = ++at;
    TimeMs scale = 100;
    for (; at < s.size() && s[at] >= '0' && s[at] <= '9'; ++at, scale /= 10)
      frac_ms += (s[at] - '0') * scale;
    if (at == from) return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  std::time_t t = timegm(&tm);
  std::tm back{};
  gmtime_r(&t, &back);
  if (back.tm_mon != mo - 1 || back.tm_mday != d) return std::nullopt;  // no such day
  TimeMs ms = static_cast<TimeMs>(t) * 1000 + sec * TimeMs{1000} + frac_ms;
  std::string zone = s.substr(at);
  if (zone == "Z" || zone == "z") return ms;
  int oh, om;
  if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && digits(at + 1, 2, &oh) &&
      zone[3] == ':' && digits(at + 4, 2, &om) && oh <= 23 && om <= 59)
    return ms - (zone[0] == '+' ? 1 : -1) * (oh * 3600 + om * 60) * TimeMs{1000};
  return std::nullopt;
}

}  // namespace kiln
