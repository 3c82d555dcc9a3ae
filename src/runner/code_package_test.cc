// Code packages: what an upload's zip may hold.
#include "runner/code_package.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>
#include <vector>

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

// A zip of regular files (name, bytes), deflated (or stored), made in memory.
std::string MakeZip(const std::vector<std::pair<std::string, std::string>>& files,
                    bool store = false) {
  std::unique_ptr<archive, int (*)(archive*)> a(archive_write_new(), archive_write_free);
  archive_write_set_format_zip(a.get());
  archive_write_set_options(a.get(), store ? "zip:compression=store" : "zip:compression=deflate");
  archive_write_set_bytes_in_last_block(a.get(), 1);
  std::string out;
  auto write_cb = [](archive*, void* ud, const void* buf, size_t n) -> la_ssize_t {
    static_cast<std::string*>(ud)->append(static_cast<const char*>(buf), n);
    return static_cast<la_ssize_t>(n);
  };
  EXPECT_EQ(archive_write_open(a.get(), &out, nullptr, write_cb, nullptr), ARCHIVE_OK);
  for (const auto& [name, data] : files) {
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(),
                                                               archive_entry_free);
    archive_entry_set_pathname(e.get(), name.c_str());
    bool dir = name.back() == '/';
    archive_entry_set_filetype(e.get(), dir ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e.get(), dir ? 0755 : 0644);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(data.size()));
    EXPECT_EQ(archive_write_header(a.get(), e.get()), ARCHIVE_OK) << name.substr(0, 80);
    archive_write_data(a.get(), data.data(), data.size());
  }
  EXPECT_EQ(archive_write_close(a.get()), ARCHIVE_OK);
  return out;
}

// Names: relative, no "..", at most 1024 bytes, 64 levels and 255 bytes a
// level (longer ones make libarchive chdir along them, which moves every
// thread of the server); and the directories names imply count as entries.
TEST(CodePackageTest, LongDeepAndEscapingNamesAreRefusedAndImpliedDirsCount) {
  std::string deep, long_name(1025, 'n');
  for (int i = 0; i < 65; ++i) deep += "d/";
  deep += "f";
  for (const std::string& bad : {long_name, deep, std::string(256, 'c') + "/f", std::string("../f"),
                                 std::string("/f"), std::string("a/../../f")}) {
    auto r = CheckZip(MakeZip({{bad, "x"}}), 1 << 20);
    ASSERT_FALSE(r) << bad.substr(0, 80);
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  }
  std::string fine;
  for (int i = 0; i < 63; ++i) fine += "d/";
  std::string long_ok = std::string(255, 'o') + "/" + std::string(255, 'o') + "/" +
                        std::string(255, 'o') + "/" + std::string(255, 'o');  // 1023 bytes
  ASSERT_TRUE(CheckZip(MakeZip({{fine + "f", "x"}, {long_ok, "y"}}), 1 << 20));
  // One file ten levels down: eleven inodes.
  auto nested = MakeZip({{"a/b/c/d/e/f/g/h/i/j/file", "x"}});
  EXPECT_EQ(CheckZip(nested, 1 << 20, 11)->files, 11);
  auto over = CheckZip(nested, 1 << 20, 10);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code(), ErrorCode::kTooLarge);
}

// A member whose data is longer than its header says is not unpacked: the
// upload's check counted what the headers say.
TEST(CodePackageTest, AZipCutShortBeforeItsCentralDirectoryIsRefused) {
  std::string zip = MakeZip({{"first", "1"}, {"second", "2"}});
  ASSERT_TRUE(CheckZip(zip, 1 << 20));
  // Cut between the members: the first still reads whole, the second is gone.
  std::string cut = zip.substr(0, zip.find("PK\x03\x04", 4));
  auto check = CheckZip(cut, 1 << 20);
  ASSERT_FALSE(check);
  EXPECT_EQ(check.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(check.error().message().find("central directory"), std::string::npos);
  // Cut inside the central directory, or inside its end record's comment.
  EXPECT_FALSE(CheckZip(zip.substr(0, zip.rfind("PK\x01\x02") + 10), 1 << 20));
  std::string commented = zip;
  commented[commented.size() - 2] = 3;  // the comment's length
  EXPECT_FALSE(CheckZip(commented + "ab", 1 << 20));
  EXPECT_TRUE(CheckZip(commented + "abc", 1 << 20));
  EXPECT_TRUE(CheckZip(zip + "trailing bytes", 1 << 20));  // as unzip takes them
  // A stored zip as the last member, cut after it: the end record found is
  // the inner zip's, whose directory is not where it says.
  std::string outer = MakeZip({{"first", "1"}, {"inner.zip", zip}}, /*store=*/true);
  ASSERT_TRUE(CheckZip(outer, 1 << 20));
  size_t inner_end = outer.find(zip) + zip.size();
  ASSERT_NE(outer.find(zip), std::string::npos);
  EXPECT_FALSE(CheckZip(outer.substr(0, inner_end), 1 << 20));
}

TEST(CodePackageTest, AMemberThatHoldsMoreThanItsHeaderSaysIsRefused) {
  testing::TempDir dir;
  std::string honest = MakeZip({{"small", "ok"}, {"zeros", std::string(100000, '\0')}});
  std::string lying = honest;
  // The uncompressed size: at offset 22 of a local header, 24 of a central
  // directory header; both say 10.
  size_t patched = 0;
  for (auto [signature, offset] : {std::pair{"PK\x03\x04", 22}, std::pair{"PK\x01\x02", 24}})
    for (size_t at = lying.find(signature); at != std::string::npos;
         at = lying.find(signature, at + 4)) {
      uint32_t size;
      std::memcpy(&size, lying.data() + at + offset, 4);
      if (size != 100000) continue;
      uint32_t small = 10;
      std::memcpy(lying.data() + at + offset, &small, 4);
      ++patched;
    }
  ASSERT_EQ(patched, 2u);
  // Refused at upload, inflating no further than the first byte past it ...
  auto check = CheckZip(lying, 1 << 20);
  ASSERT_FALSE(check);
  EXPECT_EQ(check.error().code(), ErrorCode::kInvalidArgument) << check.error().message();
  EXPECT_TRUE(CheckZip(honest, 1 << 20));
  // A bomb: a megabyte said to be 10 bytes is found by its first chunk.
  std::string bomb = MakeZip({{"big", std::string(8 << 20, '\0')}});
  for (auto [signature, offset] : {std::pair{"PK\x03\x04", 22}, std::pair{"PK\x01\x02", 24}})
    for (size_t at = bomb.find(signature); at != std::string::npos;
         at = bomb.find(signature, at + 4)) {
      uint32_t small = 10;
      std::memcpy(bomb.data() + at + offset, &small, 4);
    }
  auto found = CheckZip(bomb, 1 << 30);
  ASSERT_FALSE(found);
  EXPECT_NE(found.error().message().find("holds more than the 10 bytes it says"), std::string::npos)
      << found.error().message();
  // ... and, had it been stored (by an older Kiln), when a run unpacks it.
  for (auto [name, bytes] : {std::pair{"honest", &honest}, std::pair{"lying", &lying}}) {
    std::string zip = dir.path() + "/" + name + ".zip", out = dir.path() + "/" + name;
    std::ofstream(zip, std::ios::binary) << *bytes;
    fs::create_directories(out);
    auto r = ExtractZip(zip, out, 1 << 20);
    if (bytes == &honest) {
      ASSERT_TRUE(r) << r.error().message();
      EXPECT_EQ(fs::file_size(out + "/zeros"), 100000u);
    } else {
      ASSERT_FALSE(r);
      EXPECT_NE(r.error().message().find("more than the 10 bytes its header says"),
                std::string::npos)
          << r.error().message();
    }
  }
}

// A streamed member ("length at end", general purpose bit 3) whose headers
// say 0 bytes has no size until it is unpacked: refused at upload and when
// a run unpacks it. And a run writes no more than its budget however the
// sizes were checked.
TEST(CodePackageTest, AMemberWithoutASizeIsRefusedAndARunHasABudget) {
  testing::TempDir dir;
  std::string honest = MakeZip({{"zeros", std::string(100000, '\0')}});
  std::string streamed = honest;
  size_t patched = 0;
  for (auto [signature, flags, size] :
       {std::tuple{"PK\x03\x04", 6, 22}, std::tuple{"PK\x01\x02", 8, 24}})
    for (size_t at = streamed.find(signature); at != std::string::npos;
         at = streamed.find(signature, at + 4)) {
      streamed[at + flags] = static_cast<char>(streamed[at + flags] | 0x08);
      std::memset(streamed.data() + at + size, 0, 4);
      ++patched;
    }
  ASSERT_EQ(patched, 2u);
  auto check = CheckZip(streamed, 1 << 20);
  EXPECT_FALSE(check) << "unpacks to " << check->unpacked_bytes;
  EXPECT_TRUE(CheckZip(honest, 1 << 20));
  std::string zip = dir.path() + "/streamed.zip", out = dir.path() + "/out";
  std::ofstream(zip, std::ios::binary) << streamed;
  fs::create_directories(out);
  EXPECT_FALSE(ExtractZip(zip, out, 1 << 20));
  EXPECT_FALSE(fs::exists(out + "/zeros") && fs::file_size(out + "/zeros") > 0);

  std::string whole = dir.path() + "/honest.zip";
  std::ofstream(whole, std::ios::binary) << honest;
  auto over = ExtractZip(whole, out, 99999);
  ASSERT_FALSE(over);
  EXPECT_NE(over.error().message().find("unpacks to more than it may"), std::string::npos)
      << over.error().message();
  EXPECT_TRUE(ExtractZip(whole, out, 100000));
}

// What a failed unpack says goes into the task's msg: it names the task
// dir as the task sees it (/task), never the host's paths.
TEST(CodePackageTest, AFailedUnpackNamesNoHostPath) {
  testing::TempDir dir;
  std::string zip = dir.path() + "/code.zip", out = dir.path() + "/task-work/x/task";
  std::ofstream(zip, std::ios::binary) << MakeZip({{"lib/data.txt", "x"}});
  fs::create_directories(out);
  std::ofstream(out + "/lib") << "a file where the package has a directory";
  auto r = ExtractZip(zip, out, 1 << 20);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message().find(dir.path()), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("/task/lib"), std::string::npos) << r.error().message();
  auto missing = ExtractZip(dir.path() + "/none.zip", out, 1 << 20);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message().find(dir.path()), std::string::npos)
      << missing.error().message();
}

// A directory member counts once, with the directories other names imply.
TEST(CodePackageTest, ADirectoryCountsOnce) {
  auto zip = MakeZip({{"d/", ""}, {"d/e/f", "x"}, {"d/e/", ""}});
  auto info = CheckZip(zip, 1 << 20);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->files, 3);  // d, d/e, d/e/f
}

}  // namespace
}  // namespace kiln::runner
