// What one task's container is: command, environment, the host directory
// mounted as its task dir, and its limits; and the OCI runtime config.json
// that runc runs it from (docs/task-lifecycle.md). Pure; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kiln::runner {

struct ContainerSpec {
  std::vector<std::string> args;                         // argv[0] is the program
  std::vector<std::pair<std::string, std::string>> env;  // after PATH and HOME; a later one wins
  std::string task_dir;  // host directory, mounted read-write at /task
  std::string hostname = "kiln-task";
  int64_t memory_bytes = 512LL << 20;  // hard limit, swap included
  int64_t pids = 256;                  // most processes at once
  uint64_t cpu_shares = 1024;
  // RLIMIT_FSIZE: no file the task writes grows past this (the write fails
  // with EFBIG, or SIGXFSZ kills the writer where it is not ignored); 0: no
  // limit.
  int64_t max_file_bytes = 0;
  bool network = false;      // false: a network namespace with loopback only
  std::string cgroups_path;  // e.g. "/kiln/<id>"; empty: runc's default
};

inline constexpr const char* kTaskDirInContainer = "/task";

// The config.json for `spec`, with the root filesystem at "rootfs" beside it.
// Namespaces: mount, pid, ipc, uts, network (unless spec.network); a minimal
// capability set; noNewPrivileges; a seccomp profile that refuses syscalls
// a task never needs (module loading, mount, reboot, bpf, ...); masked and
// read-only /proc paths.
std::string BuildConfig(const ContainerSpec& spec);

}  // namespace kiln::runner
