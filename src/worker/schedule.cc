#include "worker/schedule.h"

#include <algorithm>

#include "worker/cron.h"

namespace kiln::worker {
namespace {

// The first cron match at or after `t`.
TimeMs CronAtOrAfter(const CronSchedule& c, TimeMs t) { return c.Next(t - 1); }

TimeMs Bounded(Schedule& s, TimeMs next) {
  if (next <= 0) {
    s.status = "complete";
    s.msg = s.run_every == 0 && s.cron.empty() ? "Ran once." : "No further run.";
    return 0;
  }
  if (s.end_at > 0 && next > s.end_at) {
    s.status = "complete";
    s.msg = "Reached end_at.";
    return 0;
  }
  return next;
}

}  // namespace

Result<void> CheckTiming(const Schedule& s) {
  if (s.run_every != 0 && (s.run_every < 60 || s.run_every > kMaxRunEvery))
    return Fail(Error::InvalidArgument("run_every must be between 60 and " +
                                       std::to_string(kMaxRunEvery) + " seconds"));
  if (s.run_every != 0 && !s.cron.empty())
    return Fail(Error::InvalidArgument("give run_every or cron, not both"));
  if (s.run_times < 0) return Fail(Error::InvalidArgument("run_times must not be negative"));
  if (s.end_at > 0 && s.end_at < s.start_at)
    return Fail(Error::InvalidArgument("end_at is before start_at"));
  if (!s.cron.empty()) {
    auto c = CronSchedule::Parse(s.cron, s.time_zone);
    if (!c) return Fail(c.error());
  } else if (!s.time_zone.empty()) {
    return Fail(Error::InvalidArgument("time_zone applies to cron schedules only"));
  }
  return Ok();
}

// The scheduler's tick (500 ms) and a busy machine make a run come a little
// after it was due: one due at end_at itself still happens.
constexpr TimeMs kLateRunGrace = 30'000;

TimeMs FirstRun(const Schedule& s, TimeMs now) {
  if (s.cron.empty()) {
    // A start_at gone by runs at once: past end_at (and its grace), never.
    if (s.end_at > 0 && std::max(s.start_at, now) > s.end_at + kLateRunGrace) return 0;
    return s.start_at;
  }
  auto c = CronSchedule::Parse(s.cron, s.time_zone);
  if (!c) return 0;
  TimeMs t = CronAtOrAfter(*c, std::max(s.start_at, now));
  if (s.end_at > 0 && t > s.end_at) return 0;  // its first match is past end_at
  return t < 0 ? 0 : t;
}

TimeMs NextRunAfterChange(Schedule& s, TimeMs now) {
  if (s.run_times > 0 && s.run_count >= s.run_times) {
    s.status = "complete";
    s.msg = "Ran max times.";
    return 0;
  }
  if (s.run_count == 0 || s.start_at > s.last_run_time) {
    TimeMs first = FirstRun(s, now);
    if (first == 0) {
      s.status = "complete";
      s.msg = "No run matches the schedule.";
    }
    return first;
  }
  if (s.run_every == 0 && s.cron.empty()) return Bounded(s, 0);  // ran once since start_at
  TimeMs due = s.last_run_time;  // for cron: the next match after it
  if (s.run_every > 0) {
    TimeMs step = s.run_every * 1000;
    due = s.start_at + (s.last_run_time - s.start_at) / step * step;
  }
  return NextRun(s, due, now);
}

bool EndedBeforeRun(Schedule& s, TimeMs now) {
  if (s.end_at <= 0 || now <= s.end_at || now - s.next_start < kLateRunGrace) return false;
  s.status = "complete";
  s.msg = "Reached end_at.";
  s.next_start = 0;
  return true;
}

TimeMs NextRun(Schedule& s, TimeMs due, TimeMs now) {
  if (s.run_times > 0 && s.run_count >= s.run_times) {
    s.status = "complete";
    s.msg = "Ran max times.";
    return 0;
  }
  if (!s.cron.empty()) {
    auto c = CronSchedule::Parse(s.cron, s.time_zone);
    if (!c) return Bounded(s, 0);
    return Bounded(s, c->Next(std::max(due, now)));
  }
  if (s.run_every == 0) return Bounded(s, 0);
  TimeMs step = s.run_every * 1000;
  TimeMs next = due + step;
  if (next <= now) next += ((now - next) / step + 1) * step;  // missed while down
  return Bounded(s, next);
}

}  // namespace kiln::worker
