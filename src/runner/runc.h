// Runs one task in a fresh container with runc: an overlay root filesystem
// over an image's read-only rootfs (upper layer in a per-run work dir), the
// generated config.json, output captured to a log file with a size cap, a
// wall-clock timeout and cancellation, and everything removed afterwards:
// container, cgroup, mounts, work dir. Needs root and runc.
// Run blocks; call it from a runner thread. Thread-safe (what it shares is
// set up once, under std::call_once).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "runner/container_spec.h"

namespace kiln::runner {

struct RunResult;

struct RunOptions {
  std::string id;            // unique container id, [A-Za-z0-9_.-]
  std::string image_rootfs;  // read-only lower layer
  std::string work_dir;      // created; holds the overlay and bundle; removed after
  std::string log_path;      // stdout and stderr, appended
  size_t max_log_bytes = 8 << 20;
  std::chrono::milliseconds timeout{3600 * 1000};
  const std::atomic<bool>* cancel = nullptr;  // set to stop the container
  // The task dir (the spec's, on the data dir's disk) is measured with
  // MeasureDiskUsage while the task runs: every 500 ms, or less often when
  // a walk takes long (at most a twentieth of the time goes to walking).
  // The container is killed when the task dir holds more than this (0: no
  // limit) or nests deeper than the walk goes (looked at once more after
  // the exit, so a task quicker than the first look is caught too), ...
  int64_t max_task_dir_bytes = 0;
  // ... or when it grew while its filesystem had less than this available
  // (0: not checked), so that a task cannot fill the disk Kiln's store is on.
  int64_t min_free_disk_bytes = 0;
  // Called with the result as soon as the container has exited, before the
  // overlay, state and work dir are removed (so a caller can report first).
  std::function<void(const RunResult&)> on_exit;
};

// Why the task dir's watch stopped a container.
enum class DiskStop { kNone, kOverLimit, kTooDeep, kTooMany, kDiskFull };

struct RunResult {
  int exit_code = -1;      // the task's exit status (128+signal when killed)
  bool timed_out = false;  // killed at the timeout
  bool cancelled = false;  // killed because `cancel` was set
  bool oom = false;        // killed by the memory limit
  bool log_truncated = false;
  DiskStop disk_stop = DiskStop::kNone;  // killed by the task dir's watch
  int64_t task_dir_bytes = 0;            // at the watch's last look (0: never looked)
  std::string error;                     // set when the container could not be run at all
};

// A copy of the executable `path` (searched in PATH when it has no '/') in
// a memfd sealed against any change, as runc's own CVE-2019-5736 defence
// makes of itself (F_SEAL_SEAL|SHRINK|GROW|WRITE); -1 when it cannot be
// made. Close-on-exec; executable as /proc/self/fd/N. Used by Runc.
int SealedExecutableCopy(const std::string& path);

class Runc {
 public:
  // Runs `runc` from a sealed copy of it (SealedExecutableCopy), made when
  // runc is first needed, so a server that runs no tasks holds none:
  // runc then skips re-executing every `runc init` from a read-only copy
  // of itself (a bind mount, a remount, an unmount and an execve per
  // container; libcontainer/nsenter/cloned_binary.c). Without the copy,
  // runs `runc` by name. Replacing runc on disk takes a restart of Kiln.
  explicit Runc(std::string runc = "runc", std::string state_root = "/run/kiln-runc");
  ~Runc();
  Runc(const Runc&) = delete;
  Runc& operator=(const Runc&) = delete;

  // Why containers cannot run here ("" when they can): not root, no runc.
  // Once it said "", it says so without asking runc again.
  std::string Unavailable() const;

  RunResult Run(const ContainerSpec& spec, const RunOptions& options) const;

  // Removes what a run left behind when Kiln itself died during it: the
  // container `id` (killed if still running), its overlay mount and `work_dir`.
  void Sweep(const std::string& id, const std::string& work_dir) const;

  // The ids of the containers runc holds state for under this state root
  // (every server's on this host that shares it).
  std::vector<std::string> Containers() const;

 private:
  int RuncCommand(std::initializer_list<std::string> args) const;
  // What is executed: /proc/self/fd/<sealed_fd_>, or runc_ without a copy.
  const std::string& Exe() const;
  std::string runc_, state_root_;
  mutable std::once_flag sealed_once_;
  mutable int sealed_fd_ = -1;  // SealedExecutableCopy of runc_
  mutable std::string exe_;
  mutable std::atomic<bool> available_{false};
};

}  // namespace kiln::runner
