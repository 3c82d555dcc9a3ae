// api::UploadSlots: a project's uploads under way are bounded, each
// project's on its own, and a slot comes back when its holder goes.
#include "api/upload_slots.h"

#include <gtest/gtest.h>

namespace kiln::api {
namespace {

TEST(UploadSlotsTest, AProjectHasItsSlotsAndGetsThemBack) {
  UploadSlots slots(2);
  auto a1 = slots.Take("a");
  auto a2 = slots.Take("a");
  ASSERT_TRUE(a1 && a2);
  EXPECT_FALSE(slots.Take("a"));  // both taken
  auto b = slots.Take("b");       // another project's are its own
  EXPECT_TRUE(b);
  a1.reset();
  auto again = slots.Take("a");
  EXPECT_TRUE(again);
  EXPECT_FALSE(slots.Take("a"));
  again.reset();
  a2.reset();
  EXPECT_TRUE(slots.Take("a") && slots.Take("a"));  // each given back, and taken at once
}

}  // namespace
}  // namespace kiln::api
