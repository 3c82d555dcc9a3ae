// Run inside a task's container by the container tests: tries what the
// seccomp profile must refuse and exits with the number of the first that
// was allowed (0: all refused as they should be).
//   1  clone(CLONE_NEWUSER | CLONE_NEWNET): new namespaces, bypassing unshare
//   2  clone3: not EPERM but ENOSYS, so that libc falls back to clone
//   3  io_uring_setup
//   4  a plain fork still works (else 4)
#include <sched.h>
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
  return 0;
}
