// Codes, tasks and schedules of the task service (IronWorker v2,
// iron-api.md §3), as plain values. Persisted as JSON, format version 1
// (docs/task-lifecycle.md); fields added later decode with their defaults.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/clock.h"

namespace kiln::worker {

// Upper bounds of settings whose unit is multiplied out later (a larger
// value would overflow): 30 days, 1 TiB, 10 years.
inline constexpr int64_t kMaxRetriesDelay = 30 * 86400;
inline constexpr int64_t kMaxMemoryMb = int64_t{1} << 20;
// A task dir's disk limit (a code's `disk`): 16 MB to 16 TB, 10 GB by
// default, as IronWorker's hosted service gave each task.
inline constexpr int64_t kMinDiskMb = 16, kMaxDiskMb = int64_t{1} << 24, kDefaultDiskMb = 10240;
inline constexpr int64_t kMaxRunEvery = 10 * 365 * int64_t{86400};

enum class TaskState { kQueued, kPreparing, kRunning, kComplete, kError, kCancelled, kTimeout };
const char* StateName(TaskState s);
std::optional<TaskState> StateFromName(std::string_view name);
inline bool Final(TaskState s) { return s >= TaskState::kComplete; }

// One revision of a code. The code's id stays across revisions; each
// revision has its own history id. A zip code keeps its archive in
// DATA/codes/<id>/<rev>.zip.
struct Code {
  std::string id;          // 24 hex, kept across revisions
  std::string history_id;  // 24 hex, this revision
  std::string project_id;
  std::string name;
  int64_t rev = 1;
  // Image code: `image` + `command`. Zip code: `file_name` + `runtime` (and
  // optionally `stack`, the image to run on), or a `command`.
  std::string image;    // an image name or id of the image store ("busybox")
  std::string command;  // run by /bin/sh -c in the task dir
  std::string runtime;  // sh, python, node, ruby, php, binary
  std::string file_name;
  std::string stack;
  std::string checksum;   // MD5 hex of the zip
  int64_t code_size = 0;  // bytes of the zip
  std::vector<std::pair<std::string, std::string>> env_vars;
  std::string config;           // given to the task as a file
  int64_t max_concurrency = 0;  // 0: no limit
  int64_t retries = 0;          // 0-10: failed tasks run again as new tasks
  int64_t retries_delay = 0;    // seconds
  int default_priority = 0;
  int64_t memory_mb = 512;
  int64_t disk_mb = kDefaultDiskMb;  // the task dir's limit, its largest file's too
  bool network = false;              // host network instead of loopback only
  bool paused = false;               // of the code, not the revision: its tasks wait
  TimeMs created_at = 0;             // of the code (first revision)
  TimeMs updated_at = 0;             // of this revision
  bool zip() const { return !file_name.empty() || code_size > 0; }
};

struct Task {
  std::string id;  // 24 hex
  std::string project_id;
  std::string code_id;
  std::string code_history_id;
  std::string code_name;
  int64_t code_rev = 0;  // the revision it runs, fixed when queued
  std::string payload;
  int priority = 0;        // 0-2, 2 first
  int64_t timeout = 3600;  // seconds
  TimeMs run_after = 0;    // created_at + delay
  std::string label;
  std::string cluster = "default";
  std::string schedule_id;
  std::string original_task_id;  // a retry's first task
  int64_t retry_count = 0;       // automatic retries before this task
  bool sync = false;             // tasksRun: stdout kept for /outlog
  TaskState state = TaskState::kQueued;
  std::string msg;
  int percent = 0;  // progress
  int exit_code = -1;
  int64_t log_size = 0;
  TimeMs created_at = 0, updated_at = 0, start_time = 0, end_time = 0;
  uint64_t seq = 0;  // FIFO order within a priority
  // When the API last set progress (memory only): the task's progress file
  // counts only when written after that, so that whichever came last wins.
  TimeMs progress_set_at = 0;
};

struct Schedule {
  std::string id;  // 24 hex
  std::string project_id;
  std::string code_name;
  std::string name;
  std::string payload;
  TimeMs start_at = 0;
  TimeMs end_at = 0;            // 0: none
  int64_t run_every = 0;        // seconds, >= 60; 0: once (unless cron)
  int64_t run_times = 0;        // 0: no limit
  std::string cron;             // Kiln extension: 5-field cron expression
  std::string time_zone;        // for cron; "" is UTC
  std::optional<int> priority;  // none: the code's default_priority when a task is queued
  int64_t timeout = 3600;
  int64_t task_delay = 0;
  std::string cluster = "default";
  std::string label;
  int64_t max_concurrency = 0;       // stored and shown; the code's limit applies
  std::string status = "scheduled";  // scheduled | complete | cancelled
  std::string msg;
  TimeMs next_start = 0;  // 0: no further run
  TimeMs last_run_time = 0;
  int64_t run_count = 0;
  int64_t error_count = 0;
  TimeMs created_at = 0, updated_at = 0;
};

std::string EncodeCode(const Code& c);
std::optional<Code> DecodeCode(std::string_view b);
std::string EncodeTask(const Task& t);
std::optional<Task> DecodeTask(std::string_view b);
std::string EncodeSchedule(const Schedule& s);
std::optional<Schedule> DecodeSchedule(std::string_view b);

}  // namespace kiln::worker
