// etcdwire/v3_json.h: base64 as the gateway writes it, prefix ranges as
// etcdctl computes them, 64-bit integers read from strings or numbers.
#include "etcdwire/v3_json.h"

#include <gtest/gtest.h>

namespace muster::etcdwire {
namespace {

TEST(Keys, PrefixRangeEndIncrementsTheLastByteThatCanBe) {
  EXPECT_EQ(prefix_end("foo"), "fop");
  EXPECT_EQ(prefix_end("a\xff"), "b");
  EXPECT_EQ(prefix_end("\xff\xff"), std::string(1, '\0'));
  EXPECT_EQ(prefix_end(""), std::string(1, '\0'));
}

TEST(Keys, Base64RoundTripsEveryLength) {
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foo2"), "Zm9vMg==");
  EXPECT_EQ(base64_encode(""), "");
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes) << i;
    bytes.push_back(static_cast<char>(i * 37));
  }
  EXPECT_FALSE(base64_decode("Zm9"));
  EXPECT_FALSE(base64_decode("Zm9*"));
}

TEST(Fields, Int64FieldsAreStringsOrNumbers) {
  const auto j = nlohmann::json::parse(
      R"({"revision":"42","count":7,"id":"-1","bad":"x","key":"Zm9v","odd":"Zm9"})");
  EXPECT_EQ(json_u64(j, "revision"), 42u);
  EXPECT_EQ(json_u64(j, "count"), 7u);
  EXPECT_EQ(json_u64(j, "id"), ~uint64_t{0});
  EXPECT_EQ(json_u64(j, "bad"), 0u);
  EXPECT_EQ(json_u64(j, "absent"), 0u);
  EXPECT_EQ(json_bytes(j, "key"), "foo");
  EXPECT_EQ(json_bytes(j, "odd"), std::nullopt);
  EXPECT_EQ(json_bytes(j, "absent"), std::nullopt);
}

}  // namespace
}  // namespace muster::etcdwire
