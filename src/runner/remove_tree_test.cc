// runner::RemoveTree: trees of any depth and shape go, links are removed
// and not followed, and what cannot be removed is said.
#include "runner/remove_tree.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.h"

namespace kiln::runner {
namespace {

namespace fs = std::filesystem;

// 5,000 levels: past PATH_MAX (4096 bytes) twice over, as a task's
// `for (;;) { mkdir("a"); chdir("a"); }` makes them before it is stopped.
TEST(RemoveTreeTest, ATreeOfAnyDepthGoes) {
  testing::TempDir dir;
  std::string root = dir.path() + "/task";
  ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);
  int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY);
  for (int i = 0; i < 5000; ++i) {
    ASSERT_EQ(::mkdirat(fd, "a", 0755), 0);
    if (i % 1000 == 0) ::close(::openat(fd, "f", O_CREAT | O_WRONLY, 0644));
    int sub = ::openat(fd, "a", O_RDONLY | O_DIRECTORY);
    ::close(fd);
    fd = sub;
  }
  ::close(fd);
  auto removed = RemoveTree(root);
  ASSERT_TRUE(removed) << removed.error().message();
  EXPECT_FALSE(fs::exists(root));
}

TEST(RemoveTreeTest, LinksAreRemovedNotFollowedAndWideDirsGo) {
  testing::TempDir dir;
  std::string outside = dir.path() + "/outside";
  fs::create_directories(outside);
  std::ofstream(outside + "/keep") << "host file";
  std::string root = dir.path() + "/task";
  fs::create_directories(root + "/wide");
  for (int i = 0; i < 5000; ++i) std::ofstream(root + "/wide/" + std::to_string(i)) << i;
  fs::create_symlink(outside, root + "/link");
  fs::create_symlink(outside + "/keep", root + "/wide/filelink");
  auto removed = RemoveTree(root);
  ASSERT_TRUE(removed) << removed.error().message();
  EXPECT_FALSE(fs::exists(root));
  EXPECT_TRUE(fs::exists(outside + "/keep"));
  EXPECT_TRUE(RemoveTree(root));  // nothing there: nothing to do
  std::ofstream(dir.path() + "/file") << "x";
  EXPECT_TRUE(RemoveTree(dir.path() + "/file"));
  EXPECT_FALSE(fs::exists(dir.path() + "/file"));
}

// What cannot be removed (here: an immutable file, which root cannot
// remove either) is an error, not a loop, and the rest is removed.
TEST(RemoveTreeTest, WhatCannotBeRemovedIsSaid) {
  testing::TempDir dir;
  std::string root = dir.path() + "/task";
  fs::create_directories(root + "/stuck");
  std::ofstream(root + "/stuck/f") << "x";
  std::ofstream(root + "/other") << "x";
  int fd = ::open((root + "/stuck/f").c_str(), O_RDONLY);
  int flags = 0;
  bool set = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 &&
             (flags |= FS_IMMUTABLE_FL, ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0);
  if (!set) {
    ::close(fd);
    GTEST_SKIP() << "cannot make a file immutable here (needs root and a filesystem with flags)";
  }
  auto r = RemoveTree(root);
  flags &= ~FS_IMMUTABLE_FL;
  ::ioctl(fd, FS_IOC_SETFLAGS, &flags);
  ::close(fd);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("cannot remove"), std::string::npos) << r.error().message();
  EXPECT_FALSE(fs::exists(root + "/other"));
  EXPECT_TRUE(RemoveTree(root));
}

}  // namespace
}  // namespace kiln::runner
