#include "store/rocks/codec.h"

#include <gtest/gtest.h>

namespace kiln::store::rocks {
namespace {

TEST(CodecTest, KeysSortNumerically) {
  EXPECT_LT(MessageKey(1, 255), MessageKey(1, 256));
  EXPECT_LT(MessageKey(1, ~0ull), MessageKey(2, 0));
  EXPECT_EQ(DecodeU64(EncodeU64(0x0102030405060708ull)), 0x0102030405060708ull);
}

TEST(CodecTest, StateRoundTrips) {
  MessageState s{42, 1'700'000'000'123, 1'700'600'000'000, 7, 0xdeadbeefcafef00dull};
  auto d = DecodeState(42, EncodeState(s));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->visible_at, s.visible_at);
  EXPECT_EQ(d->expires_at, s.expires_at);
  EXPECT_EQ(d->reserved_count, 7u);
  EXPECT_EQ(d->reservation, s.reservation);
}

TEST(CodecTest, CorruptStateIsAnError) {
  EXPECT_FALSE(DecodeState(1, "short"));
  std::string b = EncodeState({});
  b[0] = 9;  // unknown version
  EXPECT_FALSE(DecodeState(1, b));
}

TEST(CodecTest, QueueRoundTrips) {
  QueueRecord q;
  q.qid = 9;
  q.project_id = "0123456789abcdef01234567";
  q.name = "naïve \"queue\"";
  q.dead_letter_queue = "dlq";
  q.max_reservations = 3;
  auto d = DecodeQueue(EncodeQueue(q));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->qid, 9u);
  EXPECT_EQ(d->name, q.name);
  EXPECT_EQ(d->dead_letter_queue, "dlq");
  EXPECT_EQ(d->max_reservations, 3);
  EXPECT_FALSE(DecodeQueue("{\"v\":2}"));
}

}  // namespace
}  // namespace kiln::store::rocks
