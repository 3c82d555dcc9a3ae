#include "mq/alert.h"

#include <gtest/gtest.h>

namespace kiln::mq {
namespace {

store::Alert A(std::string type, std::string dir, int64_t trigger) {
  return {"id", std::move(type), std::move(dir), trigger, "alerts", 0};
}

TEST(AlertTest, FixedFiresWhenTheTriggerIsCrossedInItsDirection) {
  auto up = A("fixed", "asc", 10);
  EXPECT_FALSE(Crosses(up, 8, 9));
  EXPECT_TRUE(Crosses(up, 9, 10));
  EXPECT_TRUE(Crosses(up, 0, 50));
  EXPECT_FALSE(Crosses(up, 10, 11));  // already past
  EXPECT_FALSE(Crosses(up, 11, 9));   // the other way
  auto down = A("fixed", "desc", 10);
  EXPECT_TRUE(Crosses(down, 11, 10));
  EXPECT_TRUE(Crosses(down, 50, 0));
  EXPECT_FALSE(Crosses(down, 10, 9));
  EXPECT_FALSE(Crosses(down, 9, 11));
}

TEST(AlertTest, ProgressiveFiresAtEachMultiple) {
  auto up = A("progressive", "asc", 10);
  EXPECT_TRUE(Crosses(up, 9, 10));
  EXPECT_FALSE(Crosses(up, 10, 19));
  EXPECT_TRUE(Crosses(up, 19, 20));
  EXPECT_TRUE(Crosses(up, 25, 41));
  auto down = A("progressive", "desc", 10);
  EXPECT_TRUE(Crosses(down, 25, 19));
  EXPECT_FALSE(Crosses(down, 25, 21));
  EXPECT_TRUE(Crosses(down, 21, 20));
  EXPECT_FALSE(Crosses(down, 5, 0));  // 0 is not a multiple that counts
}

TEST(AlertTest, AddRejectsDuplicatesAndMoreThanFive) {
  std::vector<store::Alert> have;
  ASSERT_TRUE(AddAlerts(have, {A("fixed", "asc", 1)}, "q"));
  EXPECT_EQ(have[0].id.size(), 24u);
  EXPECT_FALSE(AddAlerts(have, {A("fixed", "asc", 1)}, "q"));
  for (int t = 2; t <= 5; ++t) ASSERT_TRUE(AddAlerts(have, {A("fixed", "asc", t)}, "q"));
  EXPECT_FALSE(AddAlerts(have, {A("fixed", "asc", 6)}, "q"));
  std::vector<store::Alert> none;
  EXPECT_FALSE(AddAlerts(none, {A("weird", "asc", 1)}, "q"));
  EXPECT_FALSE(AddAlerts(none, {A("fixed", "up", 1)}, "q"));
  EXPECT_FALSE(AddAlerts(none, {A("fixed", "asc", 0)}, "q"));
  auto sleepy = A("fixed", "asc", 1);
  sleepy.snooze = int64_t{1} << 62;  // would overflow as milliseconds
  EXPECT_FALSE(AddAlerts(none, {sleepy}, "q"));
  auto self = A("fixed", "asc", 1);
  self.queue = "q";
  EXPECT_FALSE(AddAlerts(none, {self}, "q"));
  auto nowhere = A("fixed", "asc", 1);
  nowhere.queue = "a/b";  // no queue can have this name: its notices could never be posted
  EXPECT_FALSE(AddAlerts(none, {nowhere}, "q"));
}

}  // namespace
}  // namespace kiln::mq
