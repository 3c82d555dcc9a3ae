// Cron expressions: parsing, the next run in UTC and in a zone with DST.
#include "worker/cron.h"

#include <gtest/gtest.h>

#include "base/time_format.h"

namespace kiln::worker {
namespace {

TimeMs T(const char* rfc3339) { return *ParseRfc3339(rfc3339); }
std::string Next(const char* expr, const char* after, const char* tz = "") {
  auto c = CronSchedule::Parse(expr, tz);
  EXPECT_TRUE(c) << expr << ": " << c.error().message();
  TimeMs n = c->Next(T(after));
  return n < 0 ? "never" : FormatRfc3339(n);
}

TEST(CronTest, RefusesBadExpressions) {
  for (const char* bad :
       {"", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
        "* * * * 8", "*/0 * * * *", "5-1 * * * *", "a * * * *", "1,,2 * * * *", "* * * foo *"}) {
    auto c = CronSchedule::Parse(bad, "");
    EXPECT_FALSE(c) << bad;
  }
  for (auto [expr, field] :
       {std::pair{"61 * * * *", "minute"}, std::pair{"* 25 * * *", "hour"},
        std::pair{"* * 32 * *", "day-of-month"}, std::pair{"* * * 0 *", "month"},
        std::pair{"* * * * 9", "day-of-week"}}) {
    auto c = CronSchedule::Parse(expr, "");
    ASSERT_FALSE(c) << expr;
    EXPECT_NE(c.error().message().find(field), std::string::npos) << c.error().message();
  }
  EXPECT_FALSE(CronSchedule::Parse("@reboot", ""));
  EXPECT_FALSE(CronSchedule::Parse("5, * * * *", ""));  // an empty last item
  EXPECT_FALSE(CronSchedule::Parse("1,2, * * * *", ""));
  auto zone = CronSchedule::Parse("* * * * *", "Mars/Olympus_Mons");
  ASSERT_FALSE(zone);
  EXPECT_NE(zone.error().message().find("time zone"), std::string::npos);
}

TEST(CronTest, NextIsStrictlyAfterAndOnAWholeMinute) {
  EXPECT_EQ(Next("* * * * *", "2030-01-01T00:00:00Z"), "2030-01-01T00:01:00Z");
  EXPECT_EQ(Next("* * * * *", "2030-01-01T00:00:30Z"), "2030-01-01T00:01:00Z");
  EXPECT_EQ(Next("*/15 * * * *", "2030-01-01T00:15:00Z"), "2030-01-01T00:30:00Z");
  EXPECT_EQ(Next("5/20 * * * *", "2030-01-01T00:26:00Z"), "2030-01-01T00:45:00Z");
}

TEST(CronTest, RangesListsAndNames) {
  // 2030-01-04 is a Friday.
  EXPECT_EQ(Next("0 9-17/4 * * mon-fri", "2030-01-04T17:00:00Z"), "2030-01-07T09:00:00Z");
  EXPECT_EQ(Next("30 8 * jan,MAR *", "2030-01-31T09:00:00Z"), "2030-03-01T08:30:00Z");
  EXPECT_EQ(Next("0 0 * * 7", "2030-01-01T00:00:00Z"), "2030-01-06T00:00:00Z");  // Sunday
  EXPECT_EQ(Next("@daily", "2030-01-01T00:00:00Z"), "2030-01-02T00:00:00Z");
  EXPECT_EQ(Next("@hourly", "2030-01-01T00:00:00Z"), "2030-01-01T01:00:00Z");
  EXPECT_EQ(Next("@yearly", "2030-01-01T00:00:00Z"), "2031-01-01T00:00:00Z");
  EXPECT_EQ(Next(" @DAILY ", "2030-01-01T00:00:00Z"), "2030-01-02T00:00:00Z");
}

TEST(CronTest, BothDayFieldsRestrictedMeansEither) {
  // The 13th, or any Friday: after Tue 2030-01-01 the first is Fri the 4th.
  EXPECT_EQ(Next("0 0 13 * fri", "2030-01-01T00:00:00Z"), "2030-01-04T00:00:00Z");
  EXPECT_EQ(Next("0 0 13 * fri", "2030-01-11T00:00:00Z"), "2030-01-13T00:00:00Z");
  // A day field starting with "*" restricts nothing, as in Vixie cron: odd
  // days that are Fridays (the 4th is even; the 11th is odd).
  EXPECT_EQ(Next("0 0 */2 * fri", "2030-01-01T00:00:00Z"), "2030-01-11T00:00:00Z");
}

TEST(CronTest, LeapDaysAndImpossibleDates) {
  EXPECT_EQ(Next("0 0 29 2 *", "2030-03-01T00:00:00Z"), "2032-02-29T00:00:00Z");
  EXPECT_EQ(Next("0 0 30 2 *", "2030-01-01T00:00:00Z"), "never");
}

TEST(CronTest, TimeZonesAndDaylightSaving) {
  // 09:00 in Berlin: 08:00Z in winter (CET), 07:00Z in summer (CEST).
  EXPECT_EQ(Next("0 9 * * *", "2030-01-10T12:00:00Z", "Europe/Berlin"), "2030-01-11T08:00:00Z");
  EXPECT_EQ(Next("0 9 * * *", "2030-07-10T12:00:00Z", "Europe/Berlin"), "2030-07-11T07:00:00Z");
  // 2030-03-31: clocks go from 02:00 to 03:00 CET. 02:30 does not exist:
  // it fires when the gap ends, 03:00 CEST = 01:00Z.
  EXPECT_EQ(Next("30 2 * * *", "2030-03-30T12:00:00Z", "Europe/Berlin"), "2030-03-31T01:00:00Z");
  // Also when asked in the last minute before the gap.
  EXPECT_EQ(Next("30 2 * * *", "2030-03-31T00:59:30Z", "Europe/Berlin"), "2030-03-31T01:00:00Z");
  // 2030-10-27: clocks go from 03:00 back to 02:00. 02:30 happens twice
  // (00:30Z and 01:30Z): it fires once, at the first.
  EXPECT_EQ(Next("30 2 * * *", "2030-10-26T12:00:00Z", "Europe/Berlin"), "2030-10-27T00:30:00Z");
  EXPECT_EQ(Next("30 2 * * *", "2030-10-27T00:30:00Z", "Europe/Berlin"), "2030-10-28T01:30:00Z");
}

}  // namespace
}  // namespace kiln::worker
