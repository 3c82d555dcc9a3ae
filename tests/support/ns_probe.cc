// Run inside a task's container by the container tests: tries what the
// seccomp profile must refuse and exits with the number of the first that
// was allowed (0: all refused as they should be).
//   1  clone(CLONE_NEWUSER | CLONE_NEWNET): new namespaces, bypassing unshare
//   2  clone3: not EPERM but ENOSYS, so that libc falls back to clone
//   3  io_uring_setup
//   4  a plain fork still works (else 4)
//   5  socket(AF_VSOCK): the hypervisor, past the network namespace
//   6  fanotify_init: host root's per-user limits (container root is uid 0)
//   7  fallocate(FALLOC_FL_KEEP_SIZE) in the task dir: not EPERM but
//      EOPNOTSUPP, so that posix_fallocate falls back to writing
//   8  socket(AF_VSOCK) with the domain's upper 32 bits set (the kernel
//      reads an int)
//   9  RLIMIT_CORE lowered to 0 (core_pattern's helper would run again),
//      by setrlimit or prlimit64; reading it still works
//  10  inotify_init1: as 6 (128 instances per user, shared with host root's
//      services: a task holding them all breaks their file watches)
#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>

int main() {
  long r = syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0);
  if (r == 0) _exit(0);
  if (r > 0 || errno != EPERM) return 1;
  uint64_t args[11] = {0};
  args[4] = SIGCHLD;  // exit_signal
  r = syscall(435 /* clone3 */, args, sizeof args);
  if (r == 0) _exit(0);
  if (r > 0 || errno != ENOSYS) return 2;
  char params[120] = {0};
  r = syscall(425 /* io_uring_setup */, 1, params);
  if (r >= 0 || errno != EPERM) return 3;
  pid_t pid = fork();
  if (pid == 0) _exit(7);
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 7)
    return 4;
  int fd = socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
  if (fd >= 0 || errno != EPERM) return 5;
  r = syscall(SYS_fanotify_init, 0, 0);
  if (r >= 0 || errno != EPERM) return 6;
  fd = open("/task/ns_probe.reserved", O_CREAT | O_WRONLY, 0600);
  r = syscall(SYS_fallocate, fd, FALLOC_FL_KEEP_SIZE, 0L, 100L << 20);
  if (fd < 0 || r == 0 || errno != EOPNOTSUPP) return 7;
  r = syscall(SYS_socket, (1UL << 32) | 40, SOCK_STREAM, 0);
  if (r >= 0 || errno != EPERM) return 8;
  struct rlimit core;
  if (getrlimit(RLIMIT_CORE, &core) != 0) return 9;
  struct rlimit zero = {0, core.rlim_max};
  if (setrlimit(RLIMIT_CORE, &zero) == 0 || errno != EPERM) return 9;
  if (syscall(SYS_setrlimit, RLIMIT_CORE, &zero) == 0 || errno != EPERM) return 9;
  if (syscall(SYS_prlimit64, 0, RLIMIT_CORE, &zero, nullptr) == 0 || errno != EPERM) return 9;
  r = syscall(SYS_inotify_init1, 0);
  if (r >= 0 || errno != EPERM) return 10;
  r = syscall(SYS_inotify_init);
  if (r >= 0 || errno != EPERM) return 10;
  return 0;
}
