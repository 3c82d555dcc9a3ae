// worker::Service: codes and their revisions, the task queue, schedules,
// and the dispatcher that runs each task in its own container on one of N
// runner slots (DESIGN §4). Priority 2 before 1 before 0, FIFO within a
// priority, delays, per-code max_concurrency, paused codes held, failed
// tasks retried as new tasks. Every state change is written to the store
// before it is visible; at start, tasks that were preparing or running when
// Kiln stopped end as errors, queued ones wait again. The /2 API
// (api/worker_routes.cc) is its only caller besides tests.
// Thread-safe; Start/Stop from the owning thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "base/file_range.h"
#include "runner/image_store.h"
#include "runner/runc.h"
#include "store/store.h"
#include "worker/task.h"

namespace kiln::worker {

struct ServiceOptions {
  std::string data_dir;  // code packages, task work dirs and logs live under it
  int slots = -1;        // tasks run at once: -1 one per core, 0 none (schedules still run)
  size_t max_log_bytes = 8 << 20;
  bool run_schedules = true;  // a thread queues due schedules (tests call RunDueSchedules)
  // Finished tasks, with their logs, are dropped this long after they end.
  std::chrono::milliseconds task_retention = std::chrono::hours(24 * 7);  // 0: for ever
  // Codes may ask for the host's network (a task then reaches every service
  // of the host's loopback, as root). Off: such codes are refused (403).
  bool allow_host_network = false;
  // A running task that goes on writing to its task dir while the data
  // dir's filesystem has less than this available is stopped (0: never),
  // so that tasks cannot fill the disk the store is on. -1: 5% of that
  // filesystem's size, at most 1 GiB.
  int64_t min_free_disk_bytes = -1;
  // The most memory a code may ask for (MB): what it says is its cgroup's
  // limit and the size of its root filesystem's tmpfs. -1: this host's
  // physical memory.
  int64_t max_task_memory_mb = -1;
  // Tasks of one project that may run at once (0: no limit). Slots are
  // shared fairly anyway: each next task is of the project running the
  // fewest; this keeps a project's long tasks from holding every slot.
  int max_running_per_project = 0;
  // Queued tasks one project may have (each costs about 1 KB of memory):
  // a POST /tasks or retry past it is refused (403). Schedules and
  // automatic retries are not held to it.
  size_t max_queued_tasks_per_project = 1'000'000;
  // Revisions kept of each code (0: all). An upload past it removes the
  // oldest revisions, records and packages, that no queued or running task
  // still needs, so that a code uploaded on every commit does not fill the
  // disk.
  int max_code_revisions = 50;
  // Bytes the code packages of one project may take on disk, every kept
  // revision counted (0: no limit): an upload past it is refused (403), so
  // that one project cannot take the disk every project shares.
  int64_t max_package_bytes_per_project = int64_t{10} << 30;
};

struct NewTask {
  std::string code_name;
  std::string payload;
  std::optional<int> priority;  // none: the code's default_priority
  int64_t timeout = 3600;
  int64_t delay = 0;
  std::string label, cluster = "default";
  bool sync = false;
};

struct TaskFilter {
  std::string code_name, label, cluster;
  std::set<TaskState> states;  // empty: all
  TimeMs from = 0, to = 0;     // on created_at; 0: open
  int page = 0, per_page = 30;
};

// Counts of a code's tasks by state (index: TaskState).
using CodeStats = std::array<int64_t, 7>;

class Service {
 public:
  Service(store::Store& store, const Clock& clock, runner::ImageStore& images,
          const runner::Runc& runc, ServiceOptions options);
  ~Service();

  Result<void> Recover();
  void Start();
  void Stop();  // cancels running tasks and waits for the slots

  // Codes. PutCode creates the code, or a new revision of the code with
  // that name; `zip` (may be empty) is the package of a zip code.
  Result<Code> PutCode(const std::string& project, Code spec, const std::string& zip = "");
  Result<Code> GetCode(const std::string& project, const std::string& name_or_id) const;
  std::vector<Code> ListCodes(const std::string& project, int page, int per_page) const;
  // Removes the code, its revisions and packages; its queued tasks are cancelled.
  Result<void> DeleteCode(const std::string& project, const std::string& id);
  Result<std::vector<Code>> Revisions(const std::string& project, const std::string& id, int page,
                                      int per_page) const;
  // The zip of revision `rev` (0: latest): (file name, the open file).
  Result<std::pair<std::string, std::shared_ptr<const FileRange>>> Download(
      const std::string& project, const std::string& id, int64_t rev) const;
  Result<CodeStats> Stats(const std::string& project, const std::string& id, TimeMs from,
                          TimeMs to) const;
  Result<void> SetPaused(const std::string& project, const std::string& id, bool paused);
  Result<int64_t> CancelAll(const std::string& project, const std::string& id);

  // Names of the images tasks can run on (GET /2/stacks).
  std::vector<std::string> Stacks();

  // Tasks. QueueTasks is all or nothing: NotFound for an unknown code name.
  Result<std::vector<std::string>> QueueTasks(const std::string& project,
                                              const std::vector<NewTask>& tasks);
  Result<Task> GetTask(const std::string& project, const std::string& id) const;
  // The task, and when it has not finished, `wake` registered to be called
  // (on a slot thread, once) when it does; drop it with Unwatch.
  using Wake = std::shared_ptr<std::function<void()>>;
  Result<Task> Watch(const std::string& project, const std::string& id, Wake wake);
  void Unwatch(const std::string& id, const Wake& wake);
  // Wakes every Watch now, and later ones at once (the server is shutting
  // down).
  void WakeWatchers();
  Result<std::vector<Task>> ListTasks(const std::string& project, const TaskFilter& f) const;
  Result<void> Cancel(const std::string& project, const std::string& id);
  // A new task like the finished task `id`, after `delay` seconds.
  Result<std::string> Retry(const std::string& project, const std::string& id, int64_t delay);
  Result<void> SetProgress(const std::string& project, const std::string& id,
                           std::optional<int> percent, std::optional<std::string> msg);
  // The task's combined output so far, from byte `offset` on (a follower
  // asks for what is new), as an open file; NotFound ("Log not found")
  // before it ran.
  Result<std::shared_ptr<const FileRange>> Log(const std::string& project, const std::string& id,
                                               uint64_t offset = 0) const;

  // Schedules. CreateSchedules is all or nothing.
  Result<std::vector<std::string>> CreateSchedules(const std::string& project,
                                                   std::vector<Schedule> specs);
  Result<Schedule> GetSchedule(const std::string& project, const std::string& id) const;
  std::vector<Schedule> ListSchedules(const std::string& project, int page, int per_page) const;
  // The schedule's status before: "scheduled" when this cancelled it; a
  // complete or cancelled one stays as it is.
  Result<std::string> CancelSchedule(const std::string& project, const std::string& id);
  // Replaces the settings of a schedule (as GetSchedule returned them, edited).
  Result<Schedule> UpdateSchedule(const std::string& project, Schedule s);
  // Queues a task for every schedule that is due at the clock's now.
  void RunDueSchedules();
  // Drops finished tasks that ended more than task_retention ago, with their
  // records and logs, and schedules finished as long ago; returns how many
  // tasks. The scheduler thread calls it.
  size_t ExpireTasks();

 private:
  void SlotLoop();
  void ScheduleLoop();
  // Under mu_: the next task that may start now, or "".
  std::string PickLocked(TimeMs now);
  void QueueLocked(const Task& t);  // into its project's queue
  void UnqueueLocked(const Task& t);
  int RunningLocked(const std::string& project) const;
  // PermissionDenied when `more` tasks would take the project past its cap.
  Result<void> RoomToQueueLocked(const std::string& project, size_t more) const;
  // Under mu_: the revisions of code `id` that revision `rev` leaves
  // behind, past options_.max_code_revisions and not the one a queued,
  // preparing or running task was queued with.
  std::vector<int64_t> StaleRevisionsLocked(const std::string& id, const std::string& project,
                                            int64_t rev) const;
  // Under mu_: drops the stale revisions of `code` (StaleRevisionsLocked).
  void PruneRevisionsLocked(const Code& code);
  // Under mu_: the bytes of the packages of every kept revision of the
  // project's codes.
  int64_t PackageBytesLocked(const std::string& project) const;
  // Under mu_: PermissionDenied when a package of `size` bytes for code
  // `name` would take the project past options_.max_package_bytes_per_project.
  Result<void> RoomForPackageLocked(const std::string& project, const std::string& name,
                                    int64_t size) const;
  void RunTask(const std::string& id);
  // Under mu_: the task as it ends; queues its retry when the code allows.
  void FinishLocked(Task& t, TaskState state, std::string msg, int exit_code);
  // Under mu_: records `t`, just ended, and, when it failed and its code
  // allows, its retry as a new queued task, in one write: a crash between
  // two writes would lose the retry, or a failed first write run it twice.
  void RecordEndLocked(const Task& t, TimeMs now);
  Result<Task> MakeTaskLocked(const std::string& project, const NewTask& n, TimeMs now);
  // Records the tasks in one write, then queues them; on a failed write
  // none is queued.
  // Writes `tasks` (and `with`, records that go in the same write, such as
  // the schedule that queued them), then queues them; nothing on failure.
  Result<void> EnqueueLocked(std::vector<Task> tasks, store::Store::WorkerRecords with = {});
  Result<Schedule> CheckScheduleLocked(const std::string& project, Schedule s, TimeMs now);
  size_t ActiveSchedulesLocked(const std::string& project) const;
  std::optional<Task> RetryOfLocked(const Task& t, TimeMs now);  // none: no retries left
  // Payloads are not kept in memory (a task is kept for its retention
  // time, and its payload may be 64 KB): each is a record of its own,
  // "payload/<task id>", written with its task and read when asked for.
  // Tasks in memory have an empty payload; these fill it in.
  Result<std::string> PayloadOf(const std::string& task_id) const;
  Result<Task> WithPayload(Task t) const;
  Result<Task> FindTask(const std::string& project, const std::string& id) const;  // no payload
  std::vector<Task> ListLocked(const std::string& project, const TaskFilter& f) const;
  void IndexLocked(const Task& t);  // once it is in tasks_, where it stays put
  void UnindexLocked(const Task& t);
  // Under mu_ (so that two writes of a task reach the store in order).
  // `with`: records that go in the same write.
  Result<void> SaveAll(const std::vector<const Task*>& tasks,
                       store::Store::WorkerRecords with = {});
  Result<void> Save(const Task& t);
  void SaveOrLog(const Task& t);  // for transitions nobody waits on
  void WakeWatchersLocked(const std::string& id);
  // A queued task (already out of queued_) ends cancelled with `msg`; the
  // caller saves it.
  void EndQueuedLocked(Task& t, const std::string& msg);
  // Ends every queued task of the code, saved in one write; returns how many.
  Result<int64_t> CancelQueuedLocked(const std::string& code_id, const std::string& msg);
  void ReadProgressLocked(Task& t) const;
  Result<const Code*> FindCodeLocked(const std::string& project, const std::string& id) const;
  std::string LogPath(const std::string& id) const;
  std::string PackagePath(const std::string& code_id, int64_t rev) const;
  std::string TaskDir(const std::string& id) const;

  store::Store& store_;
  const Clock& clock_;
  runner::ImageStore& images_;
  const runner::Runc& runc_;
  ServiceOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::mutex images_mu_;                         // the image store takes one caller at a time
  std::unordered_map<std::string, Code> codes_;  // latest revision, by id
  std::map<std::pair<std::string, int64_t>, Code> revisions_;                // (id, rev)
  std::map<std::pair<std::string, std::string>, std::string> code_by_name_;  // (project, name)
  std::unordered_map<std::string, Task> tasks_;                              // by id
  // Queued tasks, by project: (-priority, seq, id).
  using QueuedTask = std::tuple<int, uint64_t, std::string>;
  std::unordered_map<std::string, std::set<QueuedTask>> queued_;
  std::unordered_map<std::string, int> running_by_project_;  // preparing or running
  // Projects whose queue a pick found nothing runnable in (delayed, paused,
  // at max_concurrency): not walked again until `until` (the first delay
  // that ends) or until something that can let a task start happens
  // (WakeSlotsLocked moves the generation). A backlog that cannot run
  // costs one walk per change, not one per slot every 200 ms.
  struct NothingRunnable {
    uint64_t generation;
    TimeMs until;
  };
  std::unordered_map<std::string, NothingRunnable> nothing_runnable_;
  uint64_t wake_generation_ = 0;
  void WakeSlotsLocked();
  std::unordered_map<std::string, uint64_t> last_start_;  // by project: starts_ then
  uint64_t starts_ = 0;
  // Every task of a project, and of a project's code name, oldest first: a
  // list walks one newest first and stops when its page is full (a scan
  // of all tasks_ took the lock for as long as the history is long).
  using TaskOrder = std::tuple<TimeMs, uint64_t, const Task*>;  // created_at, seq
  using TaskIndex = std::set<TaskOrder>;
  std::unordered_map<std::string, TaskIndex> by_project_;
  std::map<std::pair<std::string, std::string>, TaskIndex> by_code_name_;
  std::unordered_map<std::string, int> running_by_code_;
  std::unordered_map<std::string, std::shared_ptr<std::atomic<bool>>> cancels_;
  std::map<std::string, Schedule> schedules_;            // by id
  std::unordered_multimap<std::string, Wake> watchers_;  // by task id
  bool watch_closed_ = false;                            // WakeWatchers was called
  uint64_t next_seq_ = 1;
  bool stopping_ = false;
  std::vector<std::thread> slots_;
  std::thread scheduler_;
};

}  // namespace kiln::worker
