// base/file_range: the byte range a response body is sent from, fixed when
// it is opened, and refused for what is not a regular file.
#include "base/file_range.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "tests/support/temp_dir.h"

namespace kiln {
namespace {

void Write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(FileRangeTest, TheRangeFromAnOffsetIsFixedWhenOpened) {
  testing::TempDir dir;
  std::string path = dir.path() + "/log";
  Write(path, "hello world");
  auto all = FileRange::Open(path);
  ASSERT_TRUE(all) << all.error().message();
  EXPECT_EQ((*all)->size(), 11u);
  auto tail = FileRange::Open(path, 6);
  ASSERT_TRUE(tail);
  EXPECT_EQ((*tail)->offset(), 6u);
  EXPECT_EQ(*(*tail)->Read(), "world");
  auto past = FileRange::Open(path, 99);
  ASSERT_TRUE(past);
  EXPECT_EQ((*past)->size(), 0u);
  EXPECT_EQ(*(*past)->Read(), "");
  // Growth after the open is not part of it; removal does not take it away.
  std::ofstream(path, std::ios::binary | std::ios::app) << " and more";
  ASSERT_EQ(::unlink(path.c_str()), 0);
  EXPECT_EQ(*(*all)->Read(), "hello world");
  EXPECT_EQ(FileRange::Empty()->size(), 0u);
  EXPECT_EQ(*FileRange::Empty()->Read(), "");
}

TEST(FileRangeTest, OnlyARegularFileIsOpened) {
  testing::TempDir dir;
  auto missing = FileRange::Open(dir.path() + "/none");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(FileRange::Open(dir.path()));  // a directory
  std::string fifo = dir.path() + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_FALSE(FileRange::Open(fifo));  // refused at once, not waited on
  Write(dir.path() + "/real", "x");
  std::string link = dir.path() + "/link";
  ASSERT_EQ(::symlink((dir.path() + "/real").c_str(), link.c_str()), 0);
  auto linked = FileRange::Open(link);
  ASSERT_FALSE(linked);
  EXPECT_EQ(linked.error().code(), ErrorCode::kInternal);
}

}  // namespace
}  // namespace kiln
