// base/time_format: RFC 3339 as the Iron clients read and send it.
#include "base/time_format.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(TimeFormatTest, RoundTripsAndPadsTheYear) {
  EXPECT_EQ(FormatRfc3339(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(*ParseRfc3339("2024-01-02T03:04:05Z"), TimeMs{1704164645000});
  EXPECT_EQ(*ParseRfc3339("2024-01-02T04:04:05.5+01:00"), TimeMs{1704164645500});
  // Go's zero time reads back as it was written (a year of four digits).
  auto zero = ParseRfc3339("0001-01-01T00:00:00Z");
  ASSERT_TRUE(zero);
  EXPECT_EQ(FormatRfc3339(*zero), "0001-01-01T00:00:00Z");
}

TEST(TimeFormatTest, RefusesWhatIsNotATime) {
  EXPECT_FALSE(ParseRfc3339("2024-01-02T03:04:nanZ"));
  EXPECT_FALSE(ParseRfc3339("2024-13-02T03:04:05Z"));
  EXPECT_FALSE(ParseRfc3339("2024-01-02T03:04:05"));
  EXPECT_FALSE(ParseRfc3339("yesterday"));
}

}  // namespace
}  // namespace kiln
