// api::UploadSlots: a project's uploads under way are bounded, each
// project's on its own, all projects' together too, and a slot comes back
// when its holder goes.
#include "api/upload_slots.h"

#include <gtest/gtest.h>

namespace kiln::api {
namespace {

TEST(UploadSlotsTest, AProjectHasItsSlotsAndGetsThemBack) {
  UploadSlots slots(2);
  auto a1 = slots.Take("a");
  auto a2 = slots.Take("a");
  ASSERT_TRUE(a1 && a2);
  auto third = slots.Take("a");  // both taken
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(third.error().message().find("this project has 2 uploads"), std::string::npos);
  auto b = slots.Take("b");  // another project's are its own
  EXPECT_TRUE(b);
  a1->reset();
  auto again = slots.Take("a");
  EXPECT_TRUE(again);
  EXPECT_FALSE(slots.Take("a"));
  again->reset();
  a2->reset();
  auto x = slots.Take("a");
  auto y = slots.Take("a");
  EXPECT_TRUE(x && y);  // each given back, and taken at once
}

TEST(UploadSlotsTest, AllProjectsTogetherHoldAtMostTheTotal) {
  UploadSlots slots(2, 3);
  auto a1 = slots.Take("a");
  auto b1 = slots.Take("b");
  auto c1 = slots.Take("c");
  ASSERT_TRUE(a1 && b1 && c1);
  auto d1 = slots.Take("d");  // d has none taken, but the server has 3
  ASSERT_FALSE(d1);
  EXPECT_EQ(d1.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(d1.error().message().find("the server has 3 uploads"), std::string::npos);
  EXPECT_FALSE(slots.Take("a"));
  b1->reset();  // one given back: the next project's comes through
  auto d2 = slots.Take("d");
  EXPECT_TRUE(d2);
  EXPECT_FALSE(slots.Take("b"));
}

}  // namespace
}  // namespace kiln::api
