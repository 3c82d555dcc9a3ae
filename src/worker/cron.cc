#include "worker/cron.h"

#include <date/tz.h>

#include <algorithm>
#include <cctype>
#include <sstream>
#include <vector>

namespace kiln::worker {
namespace {

using std::chrono::minutes;

constexpr const char* kMonthNames[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr const char* kDayNames[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

struct Field {
  const char* name;
  int lo, hi;
  const char* const* names;  // names for lo..lo+n-1, or null
  int n_names;
};

Error Bad(const Field& f, const std::string& text, const std::string& why) {
  return Error::InvalidArgument("cron " + std::string(f.name) + " field \"" + text + "\": " + why);
}

bool ParseValue(const Field& f, std::string s, int* out) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  for (int i = 0; i < f.n_names; ++i)
    if (s == f.names[i]) {
      *out = f.lo + i;
      return true;
    }
  if (s.empty() || s.size() > 4 || !std::all_of(s.begin(), s.end(), ::isdigit)) return false;
  *out = std::stoi(s);
  return true;
}

// Sets the bits of `text` (a list of items) in `bits`, indexed by value.
template <size_t N>
Result<void> ParseField(const Field& f, const std::string& text, std::bitset<N>* bits) {
  if (text.empty()) return Fail(Bad(f, text, "empty"));
  if (text.back() == ',') return Fail(Bad(f, text, "empty list item"));  // getline drops it
  bool weekday = f.names == kDayNames;
  int hi = weekday ? 7 : f.hi;  // day of week: 7 is Sunday too
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    if (item.empty()) return Fail(Bad(f, text, "empty list item"));
    int step = 1;
    if (auto slash = item.find('/'); slash != std::string::npos) {
      if (!ParseValue({f.name, 1, 0, nullptr, 0}, item.substr(slash + 1), &step) || step < 1)
        return Fail(Bad(f, text, "bad step"));
      item = item.substr(0, slash);
    }
    int a, b;
    if (item == "*") {
      a = f.lo;
      b = f.hi;
    } else if (auto dash = item.find('-'); dash != std::string::npos) {
      if (!ParseValue(f, item.substr(0, dash), &a) || !ParseValue(f, item.substr(dash + 1), &b))
        return Fail(Bad(f, text, "bad range"));
    } else {
      if (!ParseValue(f, item, &a)) return Fail(Bad(f, text, "not a number or name"));
      b = step > 1 ? f.hi : a;  // "5/15": from 5 on
    }
    if (a < f.lo || b > hi || a > b)
      return Fail(Bad(f, text, "out of range " + std::to_string(f.lo) + "-" + std::to_string(hi)));
    for (int v = a; v <= b; v += step) bits->set(static_cast<size_t>(weekday && v == 7 ? 0 : v));
  }
  return Ok();
}

}  // namespace

Result<CronSchedule> CronSchedule::Parse(const std::string& expr, const std::string& time_zone) {
  // Macros match without regard to case or surrounding blanks.
  std::string e = expr;
  e.erase(0, e.find_first_not_of(" \t"));
  e.erase(e.find_last_not_of(" \t") + 1);
  if (!e.empty() && e[0] == '@')
    std::transform(e.begin(), e.end(), e.begin(),
                   [](unsigned char ch) { return std::tolower(ch); });
  if (e == "@reboot")
    return Fail(Error::InvalidArgument("@reboot is not a time: use start_at for a single run"));
  static const std::pair<const char*, const char*> kMacros[] = {
      {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
      {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
      {"@hourly", "0 * * * *"}};
  for (auto [name, fields] : kMacros)
    if (e == name) e = fields;
  std::stringstream ss(e);
  std::vector<std::string> parts;
  for (std::string p; ss >> p;) parts.push_back(p);
  if (parts.size() != 5)
    return Fail(
        Error::InvalidArgument("a cron expression has 5 fields (minute hour "
                               "day-of-month month day-of-week), got \"" +
                               expr + "\""));
  CronSchedule c;
  const Field kMinute{"minute", 0, 59, nullptr, 0}, kHour{"hour", 0, 23, nullptr, 0},
      kDay{"day-of-month", 1, 31, nullptr, 0}, kMonth{"month", 1, 12, kMonthNames, 12},
      kWeekday{"day-of-week", 0, 6, kDayNames, 7};
  for (auto r : {ParseField(kMinute, parts[0], &c.minutes_), ParseField(kHour, parts[1], &c.hours_),
                 ParseField(kDay, parts[2], &c.days_), ParseField(kMonth, parts[3], &c.months_),
                 ParseField(kWeekday, parts[4], &c.weekdays_)})
    if (!r) return Fail(r.error());
  // As in Vixie cron: a day field that starts with "*" (also "*/2") does
  // not restrict the day, so the other one alone decides.
  c.any_day_ = parts[2][0] == '*';
  c.any_weekday_ = parts[4][0] == '*';
  try {
    c.zone_ = date::locate_zone(time_zone.empty() ? "UTC" : time_zone);
  } catch (const std::exception&) {
    return Fail(Error::InvalidArgument("unknown time zone \"" + time_zone +
                                       "\" (an IANA name such as Europe/Berlin)"));
  }
  return c;
}

TimeMs CronSchedule::Next(TimeMs after) const {
  const auto* zone = static_cast<const date::time_zone*>(zone_);
  using SysMin = date::sys_time<minutes>;
  const date::sys_time<std::chrono::milliseconds> after_tp{std::chrono::milliseconds(after)};
  // The search runs in local time from the minute after `after`'s local
  // minute; a candidate counts when its instant is after `after` (a skipped
  // local time maps to the end of the gap, a repeated one to its first).
  auto local = date::floor<minutes>(zone->to_local(after_tp)) + minutes(1);
  const auto limit = local + date::days(5 * 366);
  while (local < limit) {
    auto day = date::floor<date::days>(local);
    date::year_month_day ymd(day);
    if (!months_[static_cast<unsigned>(ymd.month())]) {
      // The first day of the next month.
      auto next = date::year_month_day(ymd.year() / ymd.month() / 1) + date::months(1);
      local = date::local_days(next);
      continue;
    }
    bool dom = days_[static_cast<unsigned>(ymd.day())];
    bool dow = weekdays_[date::weekday(day).c_encoding()];
    // Vixie cron: both day fields restricted means either; else both.
    bool day_ok = any_day_ || any_weekday_ ? dom && dow : dom || dow;
    if (!day_ok) {
      local = day + date::days(1);
      continue;
    }
    auto since_midnight = local - day;
    int h = static_cast<int>(since_midnight.count() / 60),
        m = static_cast<int>(since_midnight.count() % 60);
    bool found = false;
    for (; h < 24 && !found; ++h, m = 0) {
      if (!hours_[static_cast<size_t>(h)]) continue;
      for (; m < 60; ++m)
        if (minutes_[static_cast<size_t>(m)]) {
          found = true;
          break;
        }
      if (found) break;
    }
    if (!found) {
      local = day + date::days(1);
      continue;
    }
    auto candidate = day + std::chrono::hours(h) + minutes(m);
    SysMin sys = date::floor<minutes>(zone->to_sys(candidate, date::choose::earliest));
    if (sys > after_tp)
      return std::chrono::duration_cast<std::chrono::milliseconds>(sys.time_since_epoch()).count();
    local = candidate + minutes(1);  // a repeated local time: it ran already
  }
  return -1;
}

}  // namespace kiln::worker
