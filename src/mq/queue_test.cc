#include "mq/queue.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace kiln::mq {
namespace {

constexpr TimeMs kNow = 1'000'000;

store::MessageState Ready(uint64_t id) { return {id, 0, kNow + 60'000, 0, 0}; }

TEST(QueueTest, ServesReadyMessagesInIdOrder) {
  Queue q({});
  for (uint64_t id : {1, 2, 3}) q.Add(Ready(id), kNow);
  EXPECT_EQ(q.PopReady()->id, 1u);
  EXPECT_EQ(q.PopReady()->id, 2u);
  EXPECT_EQ(q.PopReady()->id, 3u);
  EXPECT_FALSE(q.PopReady());
}

// Expired messages go wherever they are in the queue (behind a live head
// too), at most once per kSweepEvery; a reserved one waits for its
// reservation to end.
TEST(QueueTest, ExpiredMessagesAreSweptWhereverTheyAre) {
  Queue q({});
  q.Add({1, 0, kNow + 600'000, 0, 0}, kNow);  // the head lives on
  q.Add({2, 0, kNow + 100, 0, 0}, kNow);
  q.Add({3, kNow + 50'000, kNow + 100, 0, 0}, kNow);   // delayed past its expiry
  q.Add({4, kNow + 30'000, kNow + 100, 1, 77}, kNow);  // reserved, then expired
  EXPECT_TRUE(q.SweepExpired(kNow).empty());
  EXPECT_TRUE(q.SweepExpired(kNow + 200).empty());  // looked at kNow: not again yet
  auto swept = q.SweepExpired(kNow + Queue::kSweepEvery);
  std::sort(swept.begin(), swept.end());
  EXPECT_EQ(swept, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.SweepExpired(kNow + 40'000), std::vector<uint64_t>{4});  // its reservation ran out
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.PopReady()->id, 1u);
}

// A queue larger than one slice is looked through slice by slice.
TEST(QueueTest, ASweepLooksAtASliceAndGoesOnFromThere) {
  Queue q({});
  size_t n = Queue::kSweepBudget * 2 + 10;
  for (uint64_t id = 1; id <= n; ++id) q.Add({id, 0, kNow + 100, 0, 0}, kNow);
  size_t swept = 0;
  TimeMs t = kNow + 1000;
  for (int round = 0; round < 5 && q.size() > 0; ++round, t += Queue::kSweepEvery) {
    size_t got = q.SweepExpired(t).size();
    EXPECT_LE(got, Queue::kSweepBudget + 64);  // a slice ends at a whole bucket
    swept += got;
  }
  EXPECT_EQ(swept, n);
  EXPECT_EQ(q.size(), 0u);
}

// Messages deleted without being reserved (after a peek) leave the ready
// lists, in order or not: a queue used that way does not grow without end.
TEST(QueueTest, RemovedMessagesDoNotPileUpInTheReadyLists) {
  Queue q({});
  for (uint64_t id = 1; id <= 10'000; ++id) q.Add(Ready(id), kNow);
  for (uint64_t id = 1; id <= 5'000; ++id) q.Remove(id);  // in order: from the head
  EXPECT_EQ(q.ready_backlog(), 5'000u);
  for (uint64_t id = 10'000; id > 5'001; --id) q.Remove(id);  // from the back
  EXPECT_LE(q.ready_backlog(), 1'100u);
  EXPECT_EQ(q.PopReady()->id, 5'001u);
  EXPECT_FALSE(q.PopReady());
}

// Every touch (and every reserve of a message deleted before its timeout)
// leaves a deadline in the heap until its time: they are dropped once they
// outnumber the messages, and the live ones still fire.
TEST(QueueTest, StaleDeadlinesDoNotPileUp) {
  Queue q({});
  q.Add(Ready(1), kNow);
  q.PopReady();
  for (uint64_t r = 1; r <= 100'000; ++r) q.Reserve(1, r, kNow + 86'400'000, true);  // touches
  EXPECT_LE(q.timed_backlog(), 1'100u);
  EXPECT_FALSE(q.Tick(kNow + 86'399'999));
  EXPECT_EQ(q.Tick(kNow + 86'400'000), 1u);  // the last touch's deadline
  EXPECT_EQ(q.PopReady()->id, 1u);
  for (uint64_t r = 1; r <= 10'000; ++r) {  // reserved, then deleted
    q.Add(Ready(100 + r), kNow);
    q.PopReady();
    q.Reserve(100 + r, r, kNow + 60'000, true);
    q.Remove(100 + r);
  }
  EXPECT_LE(q.timed_backlog(), 1'100u);
  EXPECT_FALSE(q.PopReady());
  EXPECT_FALSE(q.Tick(kNow + 86'400'000 + 60'000));  // nothing left to come back
}

TEST(QueueTest, ExpiredReservationReturnsMessageToFront) {
  Queue q({});
  for (uint64_t id : {1, 2, 3}) q.Add(Ready(id), kNow);
  auto first = q.PopReady();
  q.Reserve(first->id, 42, kNow + 30'000, true);
  EXPECT_FALSE(q.Tick(kNow + 29'999));
  EXPECT_TRUE(q.Tick(kNow + 30'000));
  auto again = q.PopReady();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id, 1u);
  EXPECT_EQ(again->reserved_count, 1u);
  EXPECT_EQ(again->reservation, 0u);
}

TEST(QueueTest, TouchedReservationIgnoresTheOldDeadline) {
  Queue q({});
  q.Add(Ready(1), kNow);
  q.PopReady();
  q.Reserve(1, 7, kNow + 30'000, true);
  q.Reserve(1, 8, kNow + 90'000, true);  // touch
  EXPECT_FALSE(q.Tick(kNow + 60'000));
  EXPECT_EQ(q.Find(1)->reservation, 8u);
  EXPECT_EQ(q.Find(1)->reserved_count, 2u);
  EXPECT_TRUE(q.Tick(kNow + 90'000));
}

TEST(QueueTest, DelayedMessageBecomesReadyOnTime) {
  Queue q({});
  q.Add({1, kNow + 5'000, kNow + 60'000, 0, 0}, kNow);
  q.Add(Ready(2), kNow);
  EXPECT_EQ(q.PopReady()->id, 2u);
  EXPECT_FALSE(q.PopReady());
  EXPECT_TRUE(q.Tick(kNow + 5'000));
  EXPECT_EQ(q.PopReady()->id, 1u);
}

TEST(QueueTest, ReleaseWithDelayHoldsTheMessage) {
  Queue q({});
  q.Add(Ready(1), kNow);
  q.PopReady();
  q.Reserve(1, 5, kNow + 30'000, true);
  q.Release(1, kNow + 10'000, kNow);
  EXPECT_TRUE(q.PeekReady(10).empty());
  q.Tick(kNow + 10'000);
  ASSERT_EQ(q.PeekReady(10).size(), 1u);
  EXPECT_EQ(q.Find(1)->reservation, 0u);
}

TEST(QueueTest, PeekDoesNotTakeAndSkipsRemoved) {
  Queue q({});
  for (uint64_t id : {1, 2, 3, 4}) q.Add(Ready(id), kNow);
  q.Remove(2);
  auto peek = q.PeekReady(10);
  ASSERT_EQ(peek.size(), 3u);
  EXPECT_EQ(peek[0].id, 1u);
  EXPECT_EQ(peek[1].id, 3u);
  EXPECT_EQ(q.PopReady()->id, 1u);
  EXPECT_EQ(q.PopReady()->id, 3u);
}

TEST(QueueTest, ReleasedMessageGoesAheadOfNewerOnes) {
  Queue q({});
  for (uint64_t id : {1, 2, 3}) q.Add(Ready(id), kNow);
  q.PopReady();
  q.PopReady();
  q.Reserve(2, 9, kNow + 30'000, true);
  q.Release(2, kNow, kNow);
  q.Add(Ready(4), kNow);
  EXPECT_EQ(q.PopReady()->id, 2u);
  EXPECT_EQ(q.PopReady()->id, 3u);
  EXPECT_EQ(q.PopReady()->id, 4u);
}

TEST(QueueTest, WaitersAreWokenOnceAndForgotten) {
  Queue q({});
  int woken = 0;
  auto w = std::make_shared<Waiter>(Waiter{[&] { ++woken; }});
  q.AddWaiter(w);
  q.WakeWaiters();
  q.WakeWaiters();
  EXPECT_EQ(woken, 1);
  q.AddWaiter(w);
  q.RemoveWaiter(w.get());
  q.WakeWaiters();
  EXPECT_EQ(woken, 1);
}

TEST(QueueTest, WaitersAreWokenFirstInFirstOutAsManyAsAsked) {
  Queue q({});
  std::vector<int> woken;
  std::vector<std::shared_ptr<Waiter>> w;
  for (int i = 0; i < 4; ++i) {
    w.push_back(std::make_shared<Waiter>(Waiter{[&woken, i] { woken.push_back(i); }}));
    q.AddWaiter(w.back());
  }
  q.AddWaiter(w[0]);  // parked already: once
  q.WakeWaiters(1);
  EXPECT_EQ(woken, std::vector<int>{0});
  EXPECT_FALSE(q.RemoveWaiter(w[1].get()));  // not woken
  EXPECT_TRUE(q.RemoveWaiter(w[0].get()));   // woken already: nothing to unpark
  Queue other({});                           // as one made later under the same name
  EXPECT_FALSE(other.RemoveWaiter(w[2].get()));
  q.WakeWaiters();
  EXPECT_EQ(woken, (std::vector<int>{0, 2, 3}));
}

}  // namespace
}  // namespace kiln::mq
