#include "runner/disk_usage.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/temp_dir.h"

namespace kiln::runner {
namespace {
namespace fs = std::filesystem;

constexpr int64_t kMiB = 1 << 20;

void WriteBytes(const fs::path& p, int64_t n) {
  std::ofstream out(p, std::ios::binary);
  std::string chunk(1 << 16, 'x');
  for (int64_t left = n; left > 0; left -= static_cast<int64_t>(chunk.size()))
    out.write(chunk.data(), std::min<int64_t>(left, static_cast<int64_t>(chunk.size())));
  out.flush();
  ASSERT_TRUE(out.good());
}

TEST(DiskUsageTest, CountsWhatFilesOccupyEachAtLeastABlock) {
  testing::TempDir dir;
  auto empty = MeasureDiskUsage(dir.path());
  EXPECT_EQ(empty.entries, 1);
  EXPECT_GE(empty.bytes, 4096);
  WriteBytes(dir.path() + "/one", kMiB);
  fs::create_directories(dir.path() + "/a/b");
  WriteBytes(dir.path() + "/a/b/two", 2 * kMiB);
  for (int i = 0; i < 1000; ++i) std::ofstream(dir.path() + "/a/e" + std::to_string(i));
  auto u = MeasureDiskUsage(dir.path());
  EXPECT_EQ(u.entries, 1 + 1 + 2 + 1 + 1000);
  EXPECT_GE(u.bytes, 3 * kMiB + 1000 * 4096);
  EXPECT_LT(u.bytes, 3 * kMiB + 1000 * 4096 + 64 * 4096);
  EXPECT_FALSE(u.too_deep);
}

// A sparse file counts what it occupies, not its length; a hard-linked
// file's blocks count once, each further name 4 KiB; a symbolic link is not
// followed (to the host's files or anywhere).
TEST(DiskUsageTest, SparseFilesLinksAndSymlinks) {
  testing::TempDir dir, outside;
  WriteBytes(outside.path() + "/big", 8 * kMiB);
  fs::create_directories(dir.path() + "/t");
  ASSERT_EQ(truncate((dir.path() + "/t/sparse").c_str(), 0), -1);  // not there yet
  std::ofstream(dir.path() + "/t/sparse").close();
  ASSERT_EQ(truncate((dir.path() + "/t/sparse").c_str(), 1LL << 30), 0);
  WriteBytes(dir.path() + "/t/data", kMiB);
  for (int i = 0; i < 3; ++i)
    fs::create_hard_link(dir.path() + "/t/data", dir.path() + "/t/link" + std::to_string(i));
  fs::create_symlink(outside.path(), dir.path() + "/t/out");
  fs::create_symlink(outside.path() + "/big", dir.path() + "/t/bigfile");
  auto u = MeasureDiskUsage(dir.path());
  EXPECT_GE(u.bytes, kMiB + 3 * 4096);
  EXPECT_LT(u.bytes, 2 * kMiB);
  EXPECT_EQ(u.entries, 1 + 1 + 1 + 4 + 2);  // root, t, sparse, data's four names, two symlinks
}

// Names cost 4 KiB each even as hard links of one file (else a task could
// make the walk as long as it likes for free), and past max_entries the
// walk stops and says so.
TEST(DiskUsageTest, EveryNameCostsAndTheWalkStopsPastMaxEntries) {
  testing::TempDir dir;
  std::ofstream(dir.path() + "/f").close();
  for (int i = 0; i < 200; ++i)
    fs::create_hard_link(dir.path() + "/f", dir.path() + "/l" + std::to_string(i));
  auto u = MeasureDiskUsage(dir.path());
  EXPECT_EQ(u.entries, 1 + 201);
  EXPECT_GE(u.bytes, 202 * 4096);
  EXPECT_FALSE(u.too_many);
  auto capped = MeasureDiskUsage(dir.path(), 100);
  EXPECT_TRUE(capped.too_many);
  EXPECT_LE(capped.entries, 101);
}

// A file deleted while open (or mapped) still occupies the disk: counted
// for the processes that hold it, once, on the device asked about only.
TEST(DiskUsageTest, UnlinkedOpenAndMappedFilesCount) {
  if (geteuid() != 0) GTEST_SKIP() << "/proc/<pid>/map_files is root's to read";
  testing::TempDir dir;
  struct stat d;
  ASSERT_EQ(stat(dir.path().c_str(), &d), 0);
  EXPECT_EQ(UnlinkedOpenFileBytes({getpid()}, d.st_dev), 0);
  std::string held = dir.path() + "/held", mapped = dir.path() + "/mapped";
  WriteBytes(held, 2 * kMiB);
  WriteBytes(mapped, kMiB);
  int fd = open(held.c_str(), O_RDONLY | O_CLOEXEC);
  int fd2 = dup(fd);
  ASSERT_GE(fd, 0);
  int mfd = open(mapped.c_str(), O_RDONLY | O_CLOEXEC);
  void* map = mmap(nullptr, kMiB, PROT_READ, MAP_SHARED, mfd, 0);
  ASSERT_NE(map, MAP_FAILED);
  close(mfd);                                                 // the mapping alone holds it now
  EXPECT_EQ(UnlinkedOpenFileBytes({getpid()}, d.st_dev), 0);  // named still: the walk counts them
  ASSERT_EQ(unlink(held.c_str()), 0);
  ASSERT_EQ(unlink(mapped.c_str()), 0);
  int64_t b = UnlinkedOpenFileBytes({getpid(), getpid()}, d.st_dev);
  EXPECT_GE(b, 3 * kMiB);
  EXPECT_LT(b, 3 * kMiB + 64 * 4096);  // each inode once, however many fds or pids
  EXPECT_EQ(UnlinkedOpenFileBytes({getpid()}, d.st_dev + 1), 0);
  EXPECT_EQ(UnlinkedOpenFileBytes({999999999}, d.st_dev), 0);  // no such process
  munmap(map, kMiB);
  close(fd);
  close(fd2);
}

TEST(DiskUsageTest, NestingPastTheDepthItWalksIsReported) {
  testing::TempDir dir;
  fs::path p = dir.path();
  for (int i = 0; i < kMaxMeasuredDepth + 10; ++i) {
    p /= "d";
    if (i == 100) {
      fs::create_directories(p);
      WriteBytes(p / "mid", kMiB);
    }
  }
  fs::create_directories(p);
  auto u = MeasureDiskUsage(dir.path());
  EXPECT_TRUE(u.too_deep);
  EXPECT_GE(u.bytes, kMiB);  // what lies within reach still counts
  EXPECT_EQ(u.entries, 1 + kMaxMeasuredDepth + 1);
  fs::path shallow = fs::path(dir.path()) / "s";
  for (int i = 0; i < kMaxMeasuredDepth - 5; ++i) shallow /= "d";
  fs::remove_all(fs::path(dir.path()) / "d");
  fs::create_directories(shallow);
  EXPECT_FALSE(MeasureDiskUsage(dir.path()).too_deep);
  EXPECT_EQ(MeasureDiskUsage(dir.path() + "/no-such-dir").entries, 0);
}

}  // namespace
}  // namespace kiln::runner
