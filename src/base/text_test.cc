// base/text: what counts as UTF-8, and how text that is not is made so.
#include "base/text.h"

#include <gtest/gtest.h>

#include <string>

namespace kiln {
namespace {

TEST(TextTest, IsUtf8AcceptsWellFormedTextOnly) {
  EXPECT_TRUE(IsUtf8(""));
  EXPECT_TRUE(IsUtf8(std::string(1000, 'a')));
  EXPECT_TRUE(IsUtf8(std::string(37, 'a') + "ünï ✓ 🙂" + std::string(9, 'z')));
  EXPECT_FALSE(IsUtf8(std::string(64, 'a') + "\xff"));
  EXPECT_FALSE(IsUtf8("\xc3"));              // cut short
  EXPECT_FALSE(IsUtf8("\xc0\x80"));          // overlong NUL
  EXPECT_FALSE(IsUtf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(IsUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
}

TEST(TextTest, ValidUtf8ReplacesEachStrayByteAndKeepsTheRest) {
  const std::string fffd = "\xef\xbf\xbd";
  EXPECT_EQ(ValidUtf8("plain ünï"), "plain ünï");
  EXPECT_EQ(ValidUtf8("a\xff"
                      "b"),
            "a" + fffd + "b");
  EXPECT_EQ(ValidUtf8("\xe2\x82"), fffd + fffd);
  EXPECT_EQ(ValidUtf8("x\xc3"), "x" + fffd);
  EXPECT_TRUE(IsUtf8(ValidUtf8("\x80\x81\xfe\xff mixed \xe2\x9c\x93")));
  EXPECT_EQ(ValidUtf8("\xe2\x9c\x93\xff"), "\xe2\x9c\x93" + fffd);
}

}  // namespace
}  // namespace kiln
