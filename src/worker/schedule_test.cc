// When schedules run: first run, the next one, missed runs, run_times,
// end_at, cron in a time zone. Pure functions of times: no clock at all.
#include "worker/schedule.h"

#include <gtest/gtest.h>

namespace kiln::worker {
namespace {

constexpr TimeMs kStart = 1'900'000'020'000;  // 2030-03-17T17:47:00Z, a whole minute
constexpr TimeMs kMin = 60'000;

Schedule Every(int64_t seconds) {
  Schedule s;
  s.start_at = kStart;
  s.run_every = seconds;
  return s;
}

TEST(ScheduleTest, RunEveryStartsAtStartAtAndKeepsItsRhythm) {
  Schedule s = Every(3600);
  ASSERT_TRUE(CheckTiming(s));
  EXPECT_EQ(FirstRun(s, kStart - kMin), kStart);
  EXPECT_EQ(FirstRun(s, kStart + 10 * kMin), kStart);  // past: at once
  // ... unless end_at has gone by too: then never (refused at creation).
  Schedule gone = Every(3600);
  gone.end_at = kStart + kMin;
  EXPECT_EQ(FirstRun(gone, kStart + 10 * kMin), 0);
  EXPECT_EQ(FirstRun(gone, kStart + kMin + 20'000), kStart);  // within the late-run grace
  EXPECT_EQ(FirstRun(gone, kStart - kMin), kStart);
  s.run_count = 1;
  // Ran a little late: the next run stays on the hour after start_at.
  EXPECT_EQ(NextRun(s, kStart, kStart + 5000), kStart + 3600'000);
  EXPECT_EQ(s.status, "scheduled");
}

TEST(ScheduleTest, RunsMissedWhileDownAreSkippedNotReplayed) {
  Schedule s = Every(60);
  s.run_count = 1;
  TimeMs now = kStart + 10 * kMin + 30'000;
  EXPECT_EQ(NextRun(s, kStart, now), kStart + 11 * kMin);
}

TEST(ScheduleTest, ARunDuePastEndAtDoesNotHappen) {
  Schedule s = Every(60);
  s.end_at = kStart + 90'000;
  s.next_start = kStart + kMin;  // due before end_at, but Kiln was down until after it
  EXPECT_FALSE(EndedBeforeRun(s, kStart + kMin));
  EXPECT_TRUE(EndedBeforeRun(s, kStart + 2 * kMin));
  EXPECT_EQ(s.status, "complete");
  EXPECT_EQ(s.next_start, 0);
  // A run due at end_at itself, reached by the scheduler's tick a moment
  // later, happens: it is the last one.
  Schedule last = Every(60);
  last.end_at = last.next_start = kStart + 2 * kMin;
  EXPECT_FALSE(EndedBeforeRun(last, kStart + 2 * kMin + 300));
  EXPECT_EQ(NextRun(last, last.next_start, kStart + 2 * kMin + 300), 0);
  EXPECT_EQ(last.msg, "Reached end_at.");
  Schedule open = Every(60);  // no end_at
  EXPECT_FALSE(EndedBeforeRun(open, kStart + 1000 * kMin));
}

TEST(ScheduleTest, RunTimesAndEndAtFinishASchedule) {
  Schedule s = Every(60);
  s.run_times = 2;
  s.run_count = 2;
  EXPECT_EQ(NextRun(s, kStart + kMin, kStart + kMin), 0);
  EXPECT_EQ(s.status, "complete");
  EXPECT_EQ(s.msg, "Ran max times.");

  Schedule e = Every(60);
  e.end_at = kStart + 90'000;
  e.run_count = 2;
  EXPECT_EQ(NextRun(e, kStart + kMin, kStart + kMin), 0);
  EXPECT_EQ(e.status, "complete");

  Schedule once;
  once.start_at = kStart;
  once.run_count = 1;
  EXPECT_EQ(NextRun(once, kStart, kStart), 0);
  EXPECT_EQ(once.msg, "Ran once.");
}

// A change (PUT) takes a new start_at that lies past the last run; else the
// schedule goes on from its last run, on its rhythm.
TEST(ScheduleTest, AChangedScheduleRunsFromANewStartAtOrGoesOnFromItsLastRun) {
  Schedule s = Every(3600);
  s.run_count = 5;
  s.last_run_time = kStart + 4 * 3600'000 + 300;  // the tick came 300 ms late
  TimeMs now = kStart + 4 * 3600'000 + 10 * kMin;
  Schedule same = s;
  EXPECT_EQ(NextRunAfterChange(same, now), kStart + 5 * 3600'000);  // not 300 ms later
  EXPECT_EQ(same.status, "scheduled");
  Schedule moved = s;
  moved.start_at = kStart + 7 * 24 * 3600'000LL;
  EXPECT_EQ(NextRunAfterChange(moved, now), moved.start_at);
  Schedule slower = s;
  slower.run_every = 7200;  // a new rhythm from start_at: 0, 2, 4, 6 h
  EXPECT_EQ(NextRunAfterChange(slower, now), kStart + 6 * 3600'000);

  Schedule once;
  once.start_at = kStart;
  once.run_count = 1;
  once.last_run_time = kStart + 200;
  Schedule again = once;
  EXPECT_EQ(NextRunAfterChange(again, now), 0);
  EXPECT_EQ(again.msg, "Ran once.");
  again = once;
  again.start_at = kStart + 24 * 3600'000LL;  // runs once more, tomorrow
  EXPECT_EQ(NextRunAfterChange(again, now), again.start_at);
  EXPECT_EQ(again.status, "scheduled");
}

// A cron schedule's past start_at says from when it applies: its first
// run is the next match from now, not one already over (which would run at
// once, off the schedule).
TEST(ScheduleTest, ACronScheduleWithAPastStartAtRunsAtItsNextMatch) {
  Schedule s;
  s.start_at = 1'577'836'800'000;  // 2020-01-01T00:00:00Z
  s.cron = "0 0 1 1 *";
  TimeMs now = 1'904'824'800'000;                            // 2030-05-12T15:20:00Z
  EXPECT_EQ(NextRunAfterChange(s, now), 1'924'992'000'000);  // 2031-01-01T00:00:00Z
  EXPECT_EQ(s.status, "scheduled");
}

// A schedule that ran its run_times does not run again because start_at
// moved: run_times must rise (or go to 0) for that.
TEST(ScheduleTest, MovingStartAtDoesNotRunPastRunTimes) {
  Schedule s = Every(3600);
  s.run_times = 3;
  s.run_count = 3;
  s.last_run_time = kStart + 2 * 3600'000;
  s.start_at = kStart + 24 * 3600'000LL;
  EXPECT_EQ(NextRunAfterChange(s, kStart + 3 * 3600'000), 0);
  EXPECT_EQ(s.status, "complete");
  EXPECT_EQ(s.msg, "Ran max times.");
  s.run_times = 4;
  s.status = "scheduled";
  EXPECT_EQ(NextRunAfterChange(s, kStart + 3 * 3600'000), s.start_at);
}

TEST(ScheduleTest, CronInATimeZone) {
  Schedule s;
  s.start_at = 1'893'456'000'000;  // 2030-01-01T00:00:00Z, a Tuesday
  s.cron = "30 4 * * mon";
  s.time_zone = "Europe/Berlin";
  ASSERT_TRUE(CheckTiming(s));
  TimeMs first = FirstRun(s, s.start_at);
  EXPECT_EQ(first, 1'893'987'000'000);  // Monday 2030-01-07 04:30 CET = 03:30Z
  s.run_count = 1;
  EXPECT_EQ(NextRun(s, first, first + 1000), first + 7 * 24 * 3600'000LL);
  s.run_count = 0;
  s.end_at = first - 1;  // the first match is past end_at: no run at all
  EXPECT_EQ(FirstRun(s, s.start_at), 0);
}

TEST(ScheduleTest, BadTimingIsRefused) {
  Schedule s = Every(59);
  EXPECT_FALSE(CheckTiming(s));
  s.run_every = 60;
  s.cron = "* * * * *";
  EXPECT_FALSE(CheckTiming(s));  // both
  Schedule c;
  c.cron = "* * *";
  EXPECT_FALSE(CheckTiming(c));
  c.cron = "* * * * *";
  c.time_zone = "Nowhere/Special";
  EXPECT_FALSE(CheckTiming(c));
  Schedule e = Every(60);
  e.end_at = kStart - 1;
  EXPECT_FALSE(CheckTiming(e));
}

}  // namespace
}  // namespace kiln::worker
