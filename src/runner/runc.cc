#include "runner/runc.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <vector>

#include "runner/disk_usage.h"
#include "runner/remove_tree.h"

extern char** environ;

namespace kiln::runner {
namespace fs = std::filesystem;

namespace {

// posix_spawn of `exe` (searched in PATH when it has no '/') with argv,
// stdout and stderr going to `out_fd` (or /dev/null), and no other of
// Kiln's descriptors: asio opens sockets without close-on-exec, and a
// `runc run` holding a client's connection for as long as its task runs
// would keep it open after Kiln closed it. An `exe` of /proc/self/fd/N (the
// sealed copy of runc) keeps that one descriptor, as fd 3.
pid_t Spawn(const std::string& exe, const std::vector<std::string>& argv, int out_fd,
            std::string* error) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (out_fd >= 0) {
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 2);
  } else {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  }
  constexpr std::string_view kOwnFd = "/proc/self/fd/";
  std::string path = exe;
  int first_closed = 3;
  if (exe.rfind(kOwnFd, 0) == 0) {
    posix_spawn_file_actions_adddup2(&fa, std::atoi(exe.c_str() + kOwnFd.size()), 3);
    path = std::string(kOwnFd) + "3";
    first_closed = 4;
  }
  posix_spawn_file_actions_addclosefrom_np(&fa, first_closed);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, path.c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    *error = "cannot start " + argv[0] + ": " + std::strerror(rc);
    return -1;
  }
  return pid;
}

constexpr auto kDiskLookEvery = std::chrono::milliseconds(500);
constexpr auto kDiskLookAtLeastEvery = std::chrono::seconds(5);

// The processes of container `id` (its memory cgroup under cgroup v1, its
// cgroup under v2); none once it is gone.
std::vector<pid_t> ContainerPids(const std::string& id) {
  std::vector<pid_t> pids;
  for (const std::string& path : {"/sys/fs/cgroup/memory/kiln/" + id + "/cgroup.procs",
                                  "/sys/fs/cgroup/kiln/" + id + "/cgroup.procs"}) {
    std::ifstream in(path);
    if (!in) continue;
    for (pid_t pid; in >> pid;) pids.push_back(pid);
    break;
  }
  return pids;
}

// One look of the task dir's watch (RunOptions::max_task_dir_bytes): its
// tree, and the files the container's processes hold open there after
// deleting them. `bytes`: what the last look saw, -1 before the first
// (which sets the baseline of "grew": a task is not stopped for what it
// brought along).
DiskStop LookAtTaskDir(const std::string& task_dir, const RunOptions& o, int64_t* bytes) {
  DiskUsage u = MeasureDiskUsage(task_dir);
  struct stat dir;
  if (stat(task_dir.c_str(), &dir) == 0)
    u.bytes += UnlinkedOpenFileBytes(ContainerPids(o.id), dir.st_dev);
  bool grew = *bytes >= 0 && u.bytes > *bytes;
  *bytes = u.bytes;
  if (o.max_task_dir_bytes > 0 && u.bytes > o.max_task_dir_bytes) return DiskStop::kOverLimit;
  if (o.max_task_dir_bytes > 0 && u.too_deep) return DiskStop::kTooDeep;
  if (o.max_task_dir_bytes > 0 && u.too_many) return DiskStop::kTooMany;
  if (o.min_free_disk_bytes > 0 && grew) {
    int64_t avail = AvailableDiskBytes(task_dir);
    if (avail >= 0 && avail < o.min_free_disk_bytes) return DiskStop::kDiskFull;
  }
  return DiskStop::kNone;
}

int ExitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// cgroup v1 or v2: whether the container's memory cgroup saw an OOM kill.
bool OomKilled(const std::string& id) {
  for (const std::string& path : {"/sys/fs/cgroup/memory/kiln/" + id + "/memory.oom_control",
                                  "/sys/fs/cgroup/kiln/" + id + "/memory.events",
                                  "/sys/fs/cgroup/unified/kiln/" + id + "/memory.events"}) {
    std::ifstream in(path);
    std::string key;
    long value = 0;
    while (in >> key >> value)
      if (key == "oom_kill" && value > 0) return true;
  }
  return false;
}

// `name` itself when it has a '/', else the first executable of that name
// in PATH ("" when there is none).
std::string FindExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (size_t at = 0; at <= dirs.size();) {
    size_t end = dirs.find(':', at);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = dirs.substr(at, end - at) + "/" + name;
    if (end > at && access(candidate.c_str(), X_OK) == 0) return candidate;
    at = end + 1;
  }
  return "";
}

}  // namespace

int SealedExecutableCopy(const std::string& name) {
  std::string path = FindExecutable(name);
  if (path.empty()) return -1;
  int in = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return -1;
  struct stat st {};
  // The name is the one runc gives its own copies.
  int fd = fstat(in, &st) == 0 && S_ISREG(st.st_mode)
               ? memfd_create("runc_cloned:/proc/self/exe", MFD_CLOEXEC | MFD_ALLOW_SEALING)
               : -1;
  off_t sent = 0;
  while (fd >= 0 && sent < st.st_size) {
    ssize_t n = sendfile(fd, in, nullptr, static_cast<size_t>(st.st_size - sent));
    if (n <= 0) break;
    sent += n;
  }
  close(in);
  if (fd >= 0 &&
      (sent != st.st_size ||
       fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) != 0)) {
    close(fd);
    fd = -1;
  }
  return fd;
}

Runc::Runc(std::string runc, std::string state_root)
    : runc_(std::move(runc)), state_root_(std::move(state_root)) {}

const std::string& Runc::Exe() const {
  std::call_once(sealed_once_, [this] {
    sealed_fd_ = SealedExecutableCopy(runc_);
    exe_ = sealed_fd_ >= 0 ? "/proc/self/fd/" + std::to_string(sealed_fd_) : runc_;
  });
  return exe_;
}

Runc::~Runc() {
  if (sealed_fd_ >= 0) close(sealed_fd_);
}

std::string Runc::Unavailable() const {
  if (available_) return "";
  if (geteuid() != 0)
    return "containers need root (Kiln runs as uid " + std::to_string(geteuid()) + ")";
  std::string error;
  pid_t pid = Spawn(Exe(), {runc_, "--version"}, -1, &error);
  if (pid < 0) return "runc is not installed: " + error;
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "runc --version failed";
  available_ = true;
  return "";
}

int Runc::RuncCommand(std::initializer_list<std::string> args) const {
  std::vector<std::string> argv{runc_, "--root", state_root_};
  argv.insert(argv.end(), args);
  std::string error;
  pid_t pid = Spawn(Exe(), argv, -1, &error);
  if (pid < 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return ExitCodeOf(status);
}

std::vector<std::string> Runc::Containers() const {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& d : fs::directory_iterator(state_root_, ec))
    if (d.is_directory(ec)) ids.push_back(d.path().filename().string());
  return ids;
}

void Runc::Sweep(const std::string& id, const std::string& work_dir) const {
  RuncCommand({"kill", id, "KILL"});
  RuncCommand({"delete", "--force", id});
  umount2((fs::path(work_dir) / "bundle" / "rootfs").c_str(), MNT_DETACH);
  umount2(work_dir.c_str(), MNT_DETACH);  // its tmpfs, when it had one
  RemoveTree(work_dir);
}

RunResult Runc::Run(const ContainerSpec& spec_in, const RunOptions& o) const {
  RunResult result;
  std::error_code ec;
  fs::path work = o.work_dir, bundle = work / "bundle", rootfs = bundle / "rootfs";
  fs::create_directories(work, ec);
  if (ec) {
    result.error = "cannot create " + o.work_dir + ": " + ec.message();
    return result;
  }
  // The run's own tmpfs holds the upper layer and the bundle: the dozen
  // files and directories each run makes (and runc makes in its rootfs)
  // then cost no disk filesystem work, and go at once with the unmount.
  // What the task writes to its root filesystem is charged to its memory
  // limit, as /tmp is; its task dir stays on disk. Without it the run
  // does not start: its root filesystem would be an unbounded, unwatched
  // upper layer on the data dir's disk.
  std::string tmpfs_opts =
      "mode=0700,size=" + std::to_string(std::max<int64_t>(spec_in.memory_bytes, 64 << 20));
  if (mount("kiln-run", work.c_str(), "tmpfs", 0, tmpfs_opts.c_str()) != 0) {
    result.error =
        std::string("cannot mount the run's tmpfs on ") + o.work_dir + ": " + std::strerror(errno);
    fs::remove_all(work, ec);
    return result;
  }
  fs::create_directories(work / "upper", ec);
  if (!ec) fs::create_directories(work / "overlay-work", ec);
  if (!ec) fs::create_directories(rootfs, ec);
  auto cleanup = [&] {
    // `runc run` deletes its container when it exits; the state is left
    // only when runc itself died or never got that far.
    if (fs::exists(fs::path(state_root_) / o.id, ec)) RuncCommand({"delete", "--force", o.id});
    umount2(rootfs.c_str(), MNT_DETACH);
    umount2(work.c_str(), MNT_DETACH);
    RemoveTree(work.string());
  };
  if (ec) {
    result.error = "cannot create " + o.work_dir + ": " + ec.message();
    cleanup();
    return result;
  }

  // Mount points the image may lack go into the upper layer before the
  // mount: a plain mkdir there, not one through the overlay (which creates
  // it in the overlay's work dir, renames it up and sets xattrs). One the
  // image has as a symlink or a file (`task -> /etc`) is not followed: the
  // upper layer's directory hides it.
  for (const char* d : {"proc", "dev", "sys", "tmp", "task"}) {
    struct stat st;
    if (lstat((fs::path(o.image_rootfs) / d).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
    mkdir((work / "upper" / d).c_str(), 0755);
  }
  // `volatile`: the upper layer is thrown away after the run, so the
  // overlay skips syncing it; without it, every unmount syncs the whole
  // filesystem of the data dir (Kiln's own store included). Kernels
  // before 5.10 do not know it: mount without.
  std::string overlay = "lowerdir=" + o.image_rootfs + ",upperdir=" + (work / "upper").string() +
                        ",workdir=" + (work / "overlay-work").string();
  if (mount("overlay", rootfs.c_str(), "overlay", 0, (overlay + ",volatile").c_str()) != 0 &&
      mount("overlay", rootfs.c_str(), "overlay", 0, overlay.c_str()) != 0) {
    result.error = std::string("cannot mount the overlay root filesystem: ") + std::strerror(errno);
    cleanup();
    return result;
  }

  ContainerSpec spec = spec_in;
  spec.cgroups_path = "/kiln/" + o.id;  // ours, so that an OOM kill can be read back
  std::string config = BuildConfig(spec);
  {
    std::ofstream out(bundle / "config.json", std::ios::trunc);
    out << config;
    if (!out) {
      result.error = "cannot write config.json";
      cleanup();
      return result;
    }
  }

  int log_fd = open(o.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  int pipefd[2];
  if (log_fd < 0 || pipe2(pipefd, O_CLOEXEC) != 0) {
    result.error = "cannot open the log " + o.log_path + ": " + std::strerror(errno);
    if (log_fd >= 0) close(log_fd);
    cleanup();
    return result;
  }
  std::string error;
  pid_t pid = Spawn(Exe(), {runc_, "--root", state_root_, "run", "--bundle", bundle.string(), o.id},
                    pipefd[1], &error);
  close(pipefd[1]);
  fcntl(pipefd[0], F_SETFL, O_NONBLOCK);  // the last drain must not wait on a stray writer
  if (pid < 0) {
    result.error = error;
    close(pipefd[0]);
    close(log_fd);
    cleanup();
    return result;
  }

  auto start = std::chrono::steady_clock::now();
  auto deadline = start + o.timeout;
  bool watch_disk = o.max_task_dir_bytes > 0 || o.min_free_disk_bytes > 0;
  auto next_disk_look = start + kDiskLookEvery;
  int64_t task_dir_bytes = -1;  // at the watch's last look
  // The log: up to max_log_bytes, and no more once the log's disk has less
  // than min_free_disk_bytes (looked at each MiB). Past that, output is
  // spliced to /dev/null: a task writing without end costs Kiln no copying.
  size_t logged = 0, log_cap = o.max_log_bytes, next_space_look = 0;
  int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  char buf[16384];
  auto drain = [&]() -> bool {  // false: nothing more to read for now
    if (logged >= log_cap && devnull >= 0) {
      ssize_t n = splice(pipefd[0], nullptr, devnull, nullptr, 1 << 20, SPLICE_F_NONBLOCK);
      if (n > 0) result.log_truncated = true;
      if (n >= 0 || errno == EAGAIN) return n > 0;
      // (splice failed otherwise: read and drop below)
    }
    ssize_t n = read(pipefd[0], buf, sizeof buf);
    if (n <= 0) return false;
    size_t keep = std::min<size_t>(static_cast<size_t>(n), log_cap - std::min(logged, log_cap));
    if (keep > 0 && write(log_fd, buf, keep) == static_cast<ssize_t>(keep)) logged += keep;
    if (keep < static_cast<size_t>(n)) result.log_truncated = true;
    if (o.min_free_disk_bytes > 0 && logged >= next_space_look) {
      next_space_look = logged + (1 << 20);
      struct statvfs fs;
      if (fstatvfs(log_fd, &fs) == 0 &&
          static_cast<int64_t>(fs.f_bavail) * static_cast<int64_t>(fs.f_frsize) <
              o.min_free_disk_bytes)
        log_cap = logged;
    }
    return true;
  };
  bool killed = false, pipe_open = true, oom_checked_at_eof = false;
  int status = 0;
  for (;;) {
    if (pipe_open) {
      pollfd p{pipefd[0], POLLIN, 0};
      if (poll(&p, 1, 50) > 0) {
        // Every writer closed it: POLLHUP with nothing (more) to read.
        if (!(p.revents & POLLIN) || (!drain() && (p.revents & POLLHUP))) pipe_open = false;
      }
    } else {
      usleep(100);  // runc closed its end: it is exiting
    }
    if (!killed) {
      bool over = std::chrono::steady_clock::now() >= deadline;
      bool cancel = o.cancel && o.cancel->load();
      if ((over || cancel) && !result.timed_out && !result.cancelled) {
        result.timed_out = over && !cancel;
        result.cancelled = cancel;
      }
      // While `runc run` is still creating the container, `runc kill` finds
      // nothing to kill: try again each round until it takes or runc exits.
      if (watch_disk && result.disk_stop == DiskStop::kNone &&
          std::chrono::steady_clock::now() >= next_disk_look) {
        auto began = std::chrono::steady_clock::now();
        result.disk_stop = LookAtTaskDir(spec_in.task_dir, o, &task_dir_bytes);
        result.task_dir_bytes = task_dir_bytes;
        auto took = std::chrono::steady_clock::now() - began;
        // A walk that takes long is done less often, but at least every 5 s.
        next_disk_look = began + std::clamp<std::chrono::steady_clock::duration>(
                                     20 * took, kDiskLookEvery, kDiskLookAtLeastEvery);
      }
      if (result.timed_out || result.cancelled || result.disk_stop != DiskStop::kNone)
        killed = RuncCommand({"kill", o.id, "KILL"}) == 0;
    }
    // The cgroup goes with runc: read it while the pipe is open (every
    // poll) and once at the end of the output, not in the short wait for
    // runc to exit.
    if (!result.oom && (pipe_open || !oom_checked_at_eof)) {
      result.oom = OomKilled(o.id);
      oom_checked_at_eof = !pipe_open;
    }
    pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
  }
  // Drain what is left in the pipe, within the cap.
  while (drain()) {
  }
  if (result.log_truncated) {
    // Said in the log itself: a reader of its tail must not take the cut
    // for where the task stopped writing.
    std::string note =
        "\n[kiln: output past " + std::to_string(logged) + " bytes of log was dropped]\n";
    if (write(log_fd, note.data(), note.size()) < 0) {
      // (a full disk: the cut stays unsaid)
    }
  }
  close(pipefd[0]);
  close(log_fd);
  if (devnull >= 0) close(devnull);
  result.exit_code = ExitCodeOf(status);
  // A last look: a task that filled its task dir between two looks, or
  // before the first, does not pass for one within its limit.
  if (watch_disk && result.disk_stop == DiskStop::kNone && o.max_task_dir_bytes > 0) {
    result.disk_stop = LookAtTaskDir(spec_in.task_dir, o, &task_dir_bytes);
    if (result.disk_stop == DiskStop::kDiskFull) result.disk_stop = DiskStop::kNone;  // it stopped
    result.task_dir_bytes = task_dir_bytes;
  }
  if (!killed && result.exit_code == 137 && !result.oom) result.oom = OomKilled(o.id);
  if (o.on_exit) o.on_exit(result);
  cleanup();
  return result;
}

}  // namespace kiln::runner
