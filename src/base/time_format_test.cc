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
  // Nothing is normalised into another time: no such day, negative or
  // short fields, offsets past 23:59, trailing text.
  EXPECT_FALSE(ParseRfc3339("2031-02-29T09:00:00Z"));
  EXPECT_FALSE(ParseRfc3339("2030-04-31T09:00:00Z"));
  EXPECT_TRUE(ParseRfc3339("2032-02-29T09:00:00Z"));  // a leap year
  EXPECT_FALSE(ParseRfc3339("2030-01-01T-1:00:00Z"));
  EXPECT_FALSE(ParseRfc3339("2030-01-01T01:-5:00Z"));
  EXPECT_FALSE(ParseRfc3339("2030-1-01T01:05:00Z"));
  EXPECT_FALSE(ParseRfc3339("2030-01-01T01:05:00+99:99"));
  EXPECT_FALSE(ParseRfc3339("2030-01-01T01:05:00.Z"));
  EXPECT_FALSE(ParseRfc3339("2030-01-01T01:05:00Zjunk"));
  EXPECT_EQ(*ParseRfc3339("2030-01-01T01:05:00.123456789Z"),
            *ParseRfc3339("2030-01-01T01:05:00Z") + 123);
  EXPECT_EQ(*ParseRfc3339("2030-01-01T01:05:00-02:30"), *ParseRfc3339("2030-01-01T03:35:00Z"));
}

}  // namespace
}  // namespace kiln
