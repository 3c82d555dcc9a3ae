// Container tests: real runc, a busybox image, an overlay per run. Skipped,
// with the reason, where containers cannot run (not root, no runc, no busybox).
#include "runner/runc.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/ids.h"
#include "runner/busybox_rootfs.h"
#include "tests/support/temp_dir.h"

namespace kiln::runner {
namespace {
namespace fs = std::filesystem;

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The copy runc is run from is the binary itself, sealed exactly as runc
// seals its own copies (so that `runc init` does not copy itself again),
// and it executes.
TEST(SealedExecutableCopyTest, IsTheBinarySealedAsRuncSealsItsCopies) {
  int fd = SealedExecutableCopy("true");
  ASSERT_GE(fd, 0);
  EXPECT_EQ(fcntl(fd, F_GET_SEALS), F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
  EXPECT_LT(write(fd, "x", 1), 0);  // sealed against writes
  std::string copy = ReadFile("/proc/self/fd/" + std::to_string(fd));
  std::string original = ReadFile("/usr/bin/true");
  EXPECT_FALSE(copy.empty());
  EXPECT_EQ(copy, original);
  std::string cmd = "/proc/self/fd/" + std::to_string(fd);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl(cmd.c_str(), "true", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  close(fd);
  EXPECT_EQ(SealedExecutableCopy("no-such-binary-anywhere"), -1);
}

class RuncTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_ = Runc().Unavailable();
    if (!skip_.empty()) return;
    image_ = new testing::TempDir();
    // Only a missing busybox skips; a failure to build the image is one.
    if (auto r = BuildBusyboxRootfs(image_->path() + "/rootfs"); !r) {
      if (r.error().code() != ErrorCode::kUnavailable) broken_ = r.error().message();
      skip_ = r.error().message();
    }
  }
  static void TearDownTestSuite() {
    delete image_;
    image_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(broken_.empty()) << broken_;
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    fs::create_directories(task_dir());
  }

  std::string task_dir() const { return dir_.path() + "/task"; }
  std::string log() const { return ReadFile(dir_.path() + "/log"); }

  RunResult Run(std::vector<std::string> args, ContainerSpec spec = {},
                std::chrono::milliseconds timeout = std::chrono::seconds(30),
                const std::atomic<bool>* cancel = nullptr, size_t max_log = 1 << 20,
                std::string image_rootfs = "") {
    spec.args = std::move(args);
    spec.task_dir = task_dir();
    id_ = "kiln-test-" + RandomHex(6);
    RunOptions o;
    o.id = id_;
    o.image_rootfs = image_rootfs.empty() ? image_->path() + "/rootfs" : image_rootfs;
    o.work_dir = dir_.path() + "/work";
    o.log_path = dir_.path() + "/log";
    o.max_log_bytes = max_log;
    o.timeout = timeout;
    o.cancel = cancel;
    o.max_task_dir_bytes = max_task_dir_bytes_;
    o.min_free_disk_bytes = min_free_disk_bytes_;
    return Runc().Run(spec, o);
  }

  static inline std::string skip_;
  static inline std::string broken_;  // the busybox image could not be built: a failure
  static inline testing::TempDir* image_ = nullptr;
  testing::TempDir dir_;
  std::string id_;
  int64_t max_task_dir_bytes_ = 0, min_free_disk_bytes_ = 0;  // RunOptions of Run
};

TEST_F(RuncTest, ExitCodesComeBack) {
  auto ok = Run({"true"});
  EXPECT_EQ(ok.error, "");
  EXPECT_EQ(ok.exit_code, 0);
  auto three = Run({"sh", "-c", "exit 3"});
  EXPECT_EQ(three.exit_code, 3);
  EXPECT_FALSE(three.timed_out);
}

TEST_F(RuncTest, EnvironmentTaskDirAndOutputReachTheTask) {
  std::ofstream(task_dir() + "/payload.json") << "{\"a\":1}";
  ContainerSpec spec;
  spec.env = {{"TASK_ID", "t1"}, {"PAYLOAD_FILE", "/task/payload.json"}};
  auto r = Run({"sh", "-c",
                "echo id=$TASK_ID; cat $PAYLOAD_FILE; echo; pwd; hostname; echo err >&2; echo out "
                "> /task/result"},
               spec);
  EXPECT_EQ(r.exit_code, 0) << log();
  // runc copies stdout and stderr on their own, so only each stream keeps its order.
  std::string out = log();
  auto err = out.find("err\n");
  ASSERT_NE(err, std::string::npos) << out;
  out.erase(err, 4);
  EXPECT_EQ(out, "id=t1\n{\"a\":1}\n/task\nkiln-task\n");
  EXPECT_EQ(ReadFile(task_dir() + "/result"), "out\n");
}

TEST_F(RuncTest, WritesStayInTheRunsOwnLayer) {
  auto r = Run({"sh", "-c", "echo x > /bin/written && cat /bin/written"});
  EXPECT_EQ(r.exit_code, 0) << log();
  EXPECT_FALSE(fs::exists(image_->path() + "/rootfs/bin/written"));
  auto again = Run({"sh", "-c", "test ! -e /bin/written"});
  EXPECT_EQ(again.exit_code, 0) << "each run starts from a fresh root filesystem";
}

TEST_F(RuncTest, MountPointsTheImageLacksAreMadeInTheRunsLayer) {
  testing::TempDir bare;
  std::string lower = bare.path() + "/rootfs";
  fs::copy(image_->path() + "/rootfs", lower,
           fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  for (const char* d : {"proc", "tmp", "task"}) fs::remove_all(fs::path(lower) / d);
  auto r = Run({"sh", "-c", "echo x > /tmp/x && test -r /proc/self/status && ls /task"}, {},
               std::chrono::seconds(30), nullptr, 1 << 20, lower);
  EXPECT_EQ(r.exit_code, 0) << log();
  EXPECT_EQ(log(), "") << "the task dir is empty";
  for (const char* d : {"proc", "tmp", "task"})
    EXPECT_FALSE(fs::exists(fs::path(lower) / d)) << d << " made in the read-only image";
}

// An image whose mount point is a symlink (`task -> /bin`) does not get the
// task dir mounted where the link points: the run's own layer hides it.
TEST_F(RuncTest, AMountPointThatIsASymlinkInTheImageIsNotFollowed) {
  testing::TempDir bare;
  std::string lower = bare.path() + "/rootfs";
  fs::copy(image_->path() + "/rootfs", lower,
           fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  fs::remove_all(fs::path(lower) / "task");
  fs::create_symlink("/bin", fs::path(lower) / "task");
  auto r = Run({"sh", "-c", "test ! -L /task && test -x /bin/sh && ls /task"}, {},
               std::chrono::seconds(30), nullptr, 1 << 20, lower);
  EXPECT_EQ(r.exit_code, 0) << r.error << log();
  EXPECT_EQ(log(), "") << "the task dir is empty";
  EXPECT_TRUE(fs::is_symlink(fs::path(lower) / "task"));
}

TEST_F(RuncTest, TimeoutKillsTheContainer) {
  auto started = std::chrono::steady_clock::now();
  auto r = Run({"sleep", "60"}, {}, std::chrono::milliseconds(500));
  EXPECT_TRUE(r.timed_out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(20));
}

TEST_F(RuncTest, CancelKillsTheContainer) {
  std::atomic<bool> cancel{false};
  std::thread later([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    cancel = true;
  });
  auto r = Run({"sleep", "60"}, {}, std::chrono::seconds(30), &cancel);
  later.join();
  EXPECT_TRUE(r.cancelled);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 137);  // killed, not run to its end
}

// A cancel that comes while runc is still creating the container (here:
// before the run starts) must still kill it once it exists.
TEST_F(RuncTest, CancelBeforeTheContainerExistsStillKillsIt) {
  std::atomic<bool> cancel{true};
  auto r = Run({"sleep", "20"}, {}, std::chrono::seconds(30), &cancel);
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(r.exit_code, 137) << "the container ran to its end";
}

TEST_F(RuncTest, MemoryLimitEndsTheTaskAsOutOfMemory) {
  ContainerSpec spec;
  spec.memory_bytes = 32 << 20;
  // tmpfs pages count against the container's memory.
  auto r =
      Run({"sh", "-c", "dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>/dev/null; echo survived"},
          spec);
  EXPECT_TRUE(r.oom || r.exit_code == 137 || log().find("survived") == std::string::npos) << log();
  EXPECT_TRUE(r.oom) << "exit " << r.exit_code << " log " << log();
}

TEST_F(RuncTest, LogIsCapped) {
  auto r = Run({"sh", "-c", "yes | head -c 100000"}, {}, std::chrono::seconds(30), nullptr, 1000);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(r.log_truncated);
  // The kept output, then a line that says the rest was dropped.
  const std::string note = "\n[kiln: output past 1000 bytes of log was dropped]\n";
  EXPECT_EQ(log().size(), 1000u + note.size());
  EXPECT_TRUE(log().ends_with(note)) << log().substr(990);
}

// Output past the cap is thrown away (spliced to /dev/null, not copied)
// and the task runs on to its end; with the log's disk nearly full the log
// stops early.
TEST_F(RuncTest, OutputPastTheCapIsDroppedAndALowDiskStopsTheLog) {
  auto r = Run({"sh", "-c", "head -c 200000000 /dev/zero; echo done >&2"}, {},
               std::chrono::seconds(60), nullptr, 4096);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(r.log_truncated);
  EXPECT_EQ(log().size(),
            4096u + std::string("\n[kiln: output past 4096 bytes of log was dropped]\n").size());
  fs::remove(dir_.path() + "/log");
  min_free_disk_bytes_ = int64_t{1} << 62;  // more than any disk has free
  auto low = Run({"sh", "-c", "yes | head -c 1000000"});
  EXPECT_EQ(low.exit_code, 0) << log();
  EXPECT_TRUE(low.log_truncated);
  EXPECT_LE(log().size(), 16384u + 100);
  EXPECT_TRUE(log().ends_with(" bytes of log was dropped]\n")) << log().size();
}

TEST_F(RuncTest, ContainedNoNetworkNoMountsNoModules) {
  auto r = Run({"sh", "-c",
                "cat /proc/net/dev | grep -v -e lo: -e Inter -e face | grep -q . && exit 10;"
                "mount -t tmpfs none /mnt 2>/dev/null && exit 11;"
                "(echo x > /proc/sys/kernel/hostname) 2>/dev/null && exit 12; exit 0"});
  EXPECT_EQ(r.exit_code, 0) << log();
}

// The seccomp profile: no namespaces by clone either, clone3 answered
// ENOSYS (libc then uses clone), no io_uring; fork still works; no vsock
// fanotify or inotify; fallocate answered EOPNOTSUPP (tests/support/ns_probe.cc).
TEST_F(RuncTest, NoNamespacesByCloneNoClone3NoIoUring) {
  fs::copy_file(NS_PROBE, task_dir() + "/ns_probe");
  auto r = Run({"/task/ns_probe"});
  EXPECT_EQ(r.exit_code, 0) << log();
  struct stat st;
  ASSERT_EQ(stat((task_dir() + "/ns_probe.reserved").c_str(), &st), 0);
  EXPECT_EQ(st.st_blocks, 0);  // nothing reserved
}

// The root filesystem's upper layer is the run's own tmpfs, sized by the
// memory limit: writes there are bounded (and charged to the task), while
// the task dir, its scratch space, is on disk.
TEST_F(RuncTest, RootFilesystemWritesAreBoundedTheTaskDirIsNot) {
  ContainerSpec spec;
  spec.memory_bytes = 64 << 20;
  auto root = Run({"sh", "-c", "dd if=/dev/zero of=/big bs=1M count=100 2>&1; exit 0"}, spec);
  EXPECT_EQ(root.exit_code, 0) << log();
  // Bounded either way: the run's tmpfs fills, or its pages (charged to the
  // task's memory) get dd killed by the memory limit while sh goes on.
  EXPECT_TRUE(log().find("No space left") != std::string::npos ||
              log().find("Killed") != std::string::npos || root.oom)
      << log();
  auto task = Run(
      {"sh", "-c", "dd if=/dev/zero of=/task/big bs=1M count=100 2>/dev/null && echo wrote"}, spec);
  EXPECT_EQ(task.exit_code, 0) << log();
  EXPECT_EQ(fs::file_size(task_dir() + "/big"), 100u << 20);
}

// The task dir is on the data dir's disk: its watch holds it to a limit,
// however it is filled (here: many files, none of them large).
TEST_F(RuncTest, TaskDirPastItsDiskLimitIsKilled) {
  max_task_dir_bytes_ = 32 << 20;
  auto r = Run({"sh", "-c",
                "i=0; while [ $i -lt 200 ]; do dd if=/dev/zero of=/task/f$i bs=1M count=1 "
                "2>/dev/null; i=$((i+1)); sleep 0.02; done; echo wrote all"});
  EXPECT_EQ(r.disk_stop, DiskStop::kOverLimit) << log();
  EXPECT_EQ(r.exit_code, 137);
  EXPECT_GT(r.task_dir_bytes, 32 << 20);
  EXPECT_EQ(log().find("wrote all"), std::string::npos);
  EXPECT_FALSE(r.timed_out);
  // Done before the watch's first look: the last look, at the exit, sees it.
  fs::remove_all(task_dir());
  fs::create_directories(task_dir());
  auto quick = Run({"sh", "-c", "dd if=/dev/zero of=/task/f bs=1M count=40 2>/dev/null"});
  EXPECT_EQ(quick.disk_stop, DiskStop::kOverLimit) << log();
  EXPECT_GT(quick.task_dir_bytes, 32 << 20);
  // Within the limit, nothing happens.
  max_task_dir_bytes_ = 256 << 20;
  fs::remove_all(task_dir());
  fs::create_directories(task_dir());
  auto ok = Run({"sh", "-c", "dd if=/dev/zero of=/task/f bs=1M count=8 2>/dev/null; sleep 1"});
  EXPECT_EQ(ok.exit_code, 0) << log();
  EXPECT_EQ(ok.disk_stop, DiskStop::kNone);
  EXPECT_GE(ok.task_dir_bytes, 8 << 20);
}

// Files the task deletes while it goes on writing them are out of a walk's
// sight but still on the disk: the watch counts them, from the container's
// open descriptors. (fallocate, which reserves any amount at once, is
// refused: NoNamespacesByCloneNoClone3NoIoUring.)
TEST_F(RuncTest, DeletedFilesStillOpenCountWithTheTaskDir) {
  max_task_dir_bytes_ = 16 << 20;
  auto r = Run({"sh", "-c",
                "exec 3>/task/a 4>/task/b; rm /task/a /task/b; "
                "dd if=/dev/zero bs=1M count=12 >&3 2>/dev/null; "
                "dd if=/dev/zero bs=1M count=12 >&4 2>/dev/null; sleep 3; echo still here"});
  EXPECT_EQ(r.disk_stop, DiskStop::kOverLimit) << log();
  EXPECT_GT(r.task_dir_bytes, 16 << 20);
  EXPECT_EQ(log().find("still here"), std::string::npos) << log();
}

// What a task could leave to the host: core dumps (the host's
// core_pattern helper); and it is the first the host's OOM killer takes.
TEST_F(RuncTest, NoCoreDumpsAndTheOomKillerTakesTasksFirst) {
  auto r = Run({"sh", "-c", "echo core $(ulimit -c); echo adj $(cat /proc/self/oom_score_adj)"});
  EXPECT_EQ(r.exit_code, 0) << log();
  EXPECT_NE(log().find("core 0"), std::string::npos) << log();
  EXPECT_NE(log().find("adj 1000"), std::string::npos) << log();
}

// runc gets none of Kiln's descriptors: a connection Kiln closes while a
// task runs is closed for its peer at once, not when the task ends.
TEST_F(RuncTest, RuncHoldsNoneOfKilnsDescriptors) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);  // no close-on-exec, as asio's sockets
  RunResult r;
  std::thread run([&] { r = Run({"sh", "-c", "sleep 3; touch /task/done"}); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // runc is running
  close(p[1]);
  pollfd pf{p[0], POLLIN, 0};
  EXPECT_EQ(poll(&pf, 1, 10000), 1);               // EOF: no one else holds the write end
  EXPECT_FALSE(fs::exists(task_dir() + "/done"));  // while the task still runs
  run.join();
  close(p[0]);
  EXPECT_EQ(r.exit_code, 0) << log();
  EXPECT_TRUE(fs::exists(task_dir() + "/done"));
}

// No single file grows past max_file_bytes (RLIMIT_FSIZE): the write that
// would fails (EFBIG; here SIGXFSZ reaches the task ignored), before any
// watch could look.
TEST_F(RuncTest, NoFileGrowsPastTheFileSizeLimit) {
  ContainerSpec spec;
  spec.max_file_bytes = 16 << 20;
  auto r = Run({"sh", "-c", "dd if=/dev/zero of=/task/big bs=1M count=100"}, spec);
  EXPECT_NE(r.exit_code, 0) << log();
  EXPECT_NE(log().find("File too large"), std::string::npos) << log();
  EXPECT_EQ(fs::file_size(task_dir() + "/big"), 16u << 20);
}

// When the task dir's filesystem runs low, a task that goes on writing to
// it is stopped; one that only reads or waits is not. (A 64 MiB tmpfs
// stands in for a nearly full data dir.)
TEST_F(RuncTest, ATaskWritingToANearlyFullDiskIsStopped) {
  ASSERT_EQ(mount("kiln-test", task_dir().c_str(), "tmpfs", 0, "size=64m"), 0);
  struct Unmount {
    std::string dir;
    ~Unmount() { umount2(dir.c_str(), MNT_DETACH); }
  } unmount{task_dir()};
  min_free_disk_bytes_ = 40 << 20;
  auto r = Run({"sh", "-c",
                "i=0; while [ $i -lt 60 ]; do dd if=/dev/zero of=/task/f$i bs=1M count=1 "
                "2>/dev/null; i=$((i+1)); sleep 0.1; done; echo wrote all"});
  EXPECT_EQ(r.disk_stop, DiskStop::kDiskFull) << log();
  EXPECT_EQ(log().find("wrote all"), std::string::npos);
  auto idle = Run({"sh", "-c", "cat /task/f0 > /dev/null; sleep 1.5"});
  EXPECT_EQ(idle.exit_code, 0) << log();
  EXPECT_EQ(idle.disk_stop, DiskStop::kNone);
}

TEST_F(RuncTest, NothingIsLeftBehind) {
  auto r = Run({"sh", "-c", "echo hi > /tmp/x"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(dir_.path() + "/work"));
  EXPECT_EQ(ReadFile("/proc/mounts").find(dir_.path()), std::string::npos);
  EXPECT_FALSE(fs::exists("/run/kiln-runc/" + id_));
  EXPECT_FALSE(fs::exists("/sys/fs/cgroup/memory/kiln/" + id_));
  EXPECT_FALSE(fs::exists("/sys/fs/cgroup/pids/kiln/" + id_));
}

}  // namespace
}  // namespace kiln::runner
