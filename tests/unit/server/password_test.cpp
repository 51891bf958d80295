// bcrypt through libxcrypt (node/server/password.h).
#include "node/server/password.h"

#include <gtest/gtest.h>

namespace muster::server {
namespace {

TEST(Password, HashVerifiesItsPasswordOnly) {
  auto h = password::hash("s3cret", 4);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->rfind("$2b$04$", 0), 0u) << *h;
  EXPECT_TRUE(password::verify("s3cret", *h));
  EXPECT_FALSE(password::verify("s3cret ", *h));
  EXPECT_FALSE(password::verify("", *h));
  // Salted: the same password hashes differently each time.
  EXPECT_NE(*h, *password::hash("s3cret", 4));
}

TEST(Password, CostIsTheOneAskedFor) {
  auto h = password::hash("x", 10);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->substr(0, 7), "$2b$10$");
}

TEST(Password, GoStyle2aHashesVerify) {
  // Go's bcrypt (etcd) writes $2a$; for such passwords it is the same hash.
  auto h = password::hash("etcd-user", 4);
  ASSERT_TRUE(h.has_value());
  std::string go = *h;
  go[2] = 'a';
  EXPECT_TRUE(password::verify("etcd-user", go));
}

TEST(Password, BadInputIsRefusedNotMisread) {
  EXPECT_FALSE(password::hash(std::string("a\0b", 3), 4).has_value());
  EXPECT_FALSE(password::hash("a", 3).has_value());
  EXPECT_FALSE(password::hash("a", 32).has_value());
  EXPECT_FALSE(password::verify("a", ""));
  EXPECT_FALSE(password::verify("a", "plaintext"));
  EXPECT_FALSE(password::verify("a", "$1$md5salt$whatever"));
  auto h = password::hash("a", 4);
  EXPECT_FALSE(password::verify(std::string("a\0", 2), *h));
}

}  // namespace
}  // namespace muster::server
