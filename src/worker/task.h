// Codes and tasks of the task service (IronWorker v2, iron-api.md §3), as
// plain values. Persisted as JSON, format version 1 (docs/task-lifecycle.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/clock.h"

namespace kiln::worker {

enum class TaskState { kQueued, kPreparing, kRunning, kComplete, kError, kCancelled, kTimeout };
const char* StateName(TaskState s);
inline bool Final(TaskState s) { return s >= TaskState::kComplete; }

struct Code {
  std::string id;  // 24 hex, kept across revisions
  std::string project_id;
  std::string name;
  int64_t rev = 1;
  std::string image;    // an image name or id of the image store ("busybox")
  std::string command;  // run by /bin/sh -c in the task dir
  std::vector<std::pair<std::string, std::string>> env_vars;
  std::string config;           // given to the task as a file
  int64_t max_concurrency = 0;  // 0: no limit
  int64_t memory_mb = 512;
  TimeMs created_at = 0;
};

struct Task {
  std::string id;  // 24 hex
  std::string project_id;
  std::string code_id;
  std::string code_name;
  int64_t code_rev = 0;
  std::string payload;
  int priority = 0;        // 0-2, 2 first
  int64_t timeout = 3600;  // seconds
  TimeMs run_after = 0;    // created_at + delay
  std::string label;
  std::string cluster = "default";
  TaskState state = TaskState::kQueued;
  std::string msg;
  int exit_code = -1;
  TimeMs created_at = 0, updated_at = 0, start_time = 0, end_time = 0;
  uint64_t seq = 0;  // FIFO order within a priority
};

std::string EncodeCode(const Code& c);
std::optional<Code> DecodeCode(std::string_view b);
std::string EncodeTask(const Task& t);
std::optional<Task> DecodeTask(std::string_view b);

}  // namespace kiln::worker
