// worker::Service: codes, the task queue and the dispatcher that runs each
// task in its own container on one of N runner slots (DESIGN §4). Priority
// 2 before 1 before 0, FIFO within a priority, delays, per-code
// max_concurrency. Every state change is written to the store before it is
// visible; at start, tasks that were preparing or running when Kiln stopped
// end as errors, queued ones wait again. No HTTP here: the /2 API is next.
// Thread-safe; Start/Stop from the owning thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "runner/image_store.h"
#include "runner/runc.h"
#include "store/store.h"
#include "worker/task.h"

namespace kiln::worker {

struct ServiceOptions {
  std::string data_dir;  // task work dirs and logs live under it
  int slots = 0;         // 0: one per core
  size_t max_log_bytes = 8 << 20;
};

struct NewTask {
  std::string code_name;
  std::string payload;
  int priority = 0;
  int64_t timeout = 3600;
  int64_t delay = 0;
  std::string label, cluster = "default";
};

class Service {
 public:
  Service(store::Store& store, const Clock& clock, runner::ImageStore& images,
          const runner::Runc& runc, ServiceOptions options);
  ~Service();

  Result<void> Recover();
  void Start();
  void Stop();  // cancels running tasks and waits for the slots

  // Creates the code, or a new revision of the code with that name.
  Result<Code> PutCode(const std::string& project, Code spec);
  Result<Code> GetCode(const std::string& project, const std::string& name_or_id) const;
  // NotFound for an unknown code name (nothing is queued then).
  Result<std::vector<std::string>> QueueTasks(const std::string& project,
                                              const std::vector<NewTask>& tasks);
  Result<Task> GetTask(const std::string& project, const std::string& id) const;
  Result<void> Cancel(const std::string& project, const std::string& id);
  // The task's combined output so far; NotFound ("Log not found") before it ran.
  Result<std::string> Log(const std::string& project, const std::string& id) const;

 private:
  void SlotLoop();
  // Under mu_: the next task that may start now, or "".
  std::string PickLocked(TimeMs now);
  void RunTask(const std::string& id);
  void Save(const Task& t);  // under mu_
  std::string LogPath(const std::string& id) const;

  store::Store& store_;
  const Clock& clock_;
  runner::ImageStore& images_;
  const runner::Runc& runc_;
  ServiceOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::mutex images_mu_;                         // the image store takes one caller at a time
  std::unordered_map<std::string, Code> codes_;  // by id
  std::map<std::pair<std::string, std::string>, std::string> code_by_name_;  // (project, name)
  std::unordered_map<std::string, Task> tasks_;                              // by id
  std::set<std::tuple<int, uint64_t, std::string>> queued_;                  // (-priority, seq, id)
  std::unordered_map<std::string, int> running_by_code_;
  std::unordered_map<std::string, std::shared_ptr<std::atomic<bool>>> cancels_;
  uint64_t next_seq_ = 1;
  bool stopping_ = false;
  std::vector<std::thread> slots_;
};

}  // namespace kiln::worker
