// When a schedule runs (iron-api.md §3.4): its first run and the run after
// each one, from `start_at`, `run_every` or a cron expression with a time
// zone (a Kiln extension), `run_times` and `end_at`. Pure functions of the
// schedule and a time; worker::Service calls them under its lock.
#pragma once

#include <string>

#include "base/clock.h"
#include "base/error.h"
#include "worker/task.h"

namespace kiln::worker {

// InvalidArgument for run_every under 60 s, a bad cron expression or zone,
// both run_every and cron, end_at before start_at, negative run_times.
Result<void> CheckTiming(const Schedule& s);

// The first run of a new (or updated) schedule: start_at (at once when
// that is past), or for cron the first match at or after start_at and not
// before `now` (a past start_at says from when it applies, and runs no
// match that is already over). 0 when it would never run (no match, or
// none before end_at).
TimeMs FirstRun(const Schedule& s, TimeMs now);

// The run after one that was due at `due`, skipping runs missed before
// `now` (Kiln was down). Sets s.status/s.msg and returns 0 when no run is
// left (run_times reached, past end_at, a one-off schedule).
TimeMs NextRun(Schedule& s, TimeMs due, TimeMs now);

// The next run of a schedule just changed (or created), setting s.status
// and s.msg when there is none: none once it ran run_times times; start_at
// (FirstRun) when it has not run since start_at (new, or start_at moved
// past its last run); else the run after its last one, on the rhythm
// start_at and run_every set.
TimeMs NextRunAfterChange(Schedule& s, TimeMs now);

// Whether the due run (s.next_start, never past end_at) comes too late to
// happen: `now` is past end_at and 30 s or more after the run was due (Kiln
// was down across end_at). Then the schedule is complete, with no next run.
bool EndedBeforeRun(Schedule& s, TimeMs now);

}  // namespace kiln::worker
