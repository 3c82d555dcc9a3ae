// Code packages: what an upload's zip may hold.
#include "runner/code_package.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.h"

namespace kiln::runner {
namespace {
namespace fs = std::filesystem;

// A package is unpacked for every run: besides its bytes, its entries (an
// inode each) are bounded.
TEST(CodePackageTest, ThePackagesBytesAndEntriesAreBounded) {
  testing::TempDir dir;
  for (int i = 0; i < 5; ++i) std::ofstream(fs::path(dir.path()) / ("f" + std::to_string(i))) << i;
  auto zip = ZipDirectory(dir.path());
  ASSERT_TRUE(zip);
  auto ok = CheckZip(*zip, 1 << 20, 5);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->files, 5);
  auto many = CheckZip(*zip, 1 << 20, 4);
  ASSERT_FALSE(many);
  EXPECT_EQ(many.error().code(), ErrorCode::kTooLarge);
  auto big = CheckZip(*zip, 4);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), ErrorCode::kTooLarge);
  EXPECT_FALSE(CheckZip("not a zip", 1 << 20));
}

}  // namespace
}  // namespace kiln::runner
