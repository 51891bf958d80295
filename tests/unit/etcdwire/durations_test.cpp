// etcdwire/durations.h: Go's time.ParseDuration and Duration.String().
#include "etcdwire/durations.h"

#include <gtest/gtest.h>

namespace muster::etcdwire {
namespace {

TEST(Formatting, GoDurations) {
  using std::chrono::nanoseconds;
  EXPECT_EQ(format_go_duration(nanoseconds(0)), "0s");
  EXPECT_EQ(format_go_duration(nanoseconds(999)), "999ns");
  EXPECT_EQ(format_go_duration(nanoseconds(1'000)), "1µs");
  EXPECT_EQ(format_go_duration(nanoseconds(963'013)), "963.013µs");
  EXPECT_EQ(format_go_duration(nanoseconds(1'120'115)), "1.120115ms");
  EXPECT_EQ(format_go_duration(nanoseconds(2'500'000'000)), "2.5s");
  EXPECT_EQ(format_go_duration(nanoseconds(63'000'000'001)), "1m3.000000001s");
  EXPECT_EQ(format_go_duration(std::chrono::hours(2)), "2h0m0s");
}

TEST(Parsing, GoErrorsNameTheInput) {
  std::string why;
  EXPECT_FALSE(parse_go_duration("5", &why));
  EXPECT_EQ(why, "time: missing unit in duration \"5\"");
  EXPECT_FALSE(parse_go_duration("1d", &why));
  EXPECT_EQ(why, "time: unknown unit \"d\" in duration \"1d\"");
  EXPECT_FALSE(parse_go_duration("", &why));
  EXPECT_EQ(why, "time: invalid duration \"\"");
  EXPECT_EQ(parse_go_duration("1h30m"), std::chrono::minutes(90));
  EXPECT_EQ(parse_go_duration("-2us"), std::chrono::microseconds(-2));
}

}  // namespace
}  // namespace muster::etcdwire
