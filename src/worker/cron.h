// Cron expressions with a time zone, a Kiln extension of IronWorker
// schedules: the 5 standard fields (minute hour day-of-month month
// day-of-week) with `*`, numbers, ranges, steps, lists, month and weekday
// names, 7 for Sunday, the usual rule that a day matches when either day
// field matches if both are restricted, and @hourly, @daily (@midnight),
// @weekly, @monthly, @yearly (@annually). Times are matched in the zone's
// local time (IANA names from the system's zoneinfo). A local time that a
// DST change skips fires when the gap ends; a repeated one fires once.
// Limit: Debian's date library reads the zoneinfo transitions, which end in
// 2037; later years get the zone's last offset, without DST changes.
// Callers: worker/schedule.cc (and through it the /2 schedules API).
// Immutable after Parse; any thread.
#pragma once

#include <bitset>
#include <string>

#include "base/clock.h"
#include "base/error.h"

namespace kiln::worker {

class CronSchedule {
 public:
  // InvalidArgument naming the bad field, or the unknown zone ("" is UTC).
  static Result<CronSchedule> Parse(const std::string& expr, const std::string& time_zone);

  // The first whole minute strictly after `after` that matches; -1 when
  // none does within 5 years (e.g. "0 0 30 2 *").
  TimeMs Next(TimeMs after) const;

 private:
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;     // 1-31
  std::bitset<13> months_;   // 1-12
  std::bitset<7> weekdays_;  // 0 = Sunday
  bool any_day_ = true, any_weekday_ = true;
  const void* zone_ = nullptr;  // a date::time_zone, kept out of this header
};

}  // namespace kiln::worker
