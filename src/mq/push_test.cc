#include "mq/push.h"

#include <gtest/gtest.h>

namespace kiln::mq {
namespace {

constexpr TimeMs kNow = 1'000'000;

store::QueueRecord Queue(std::string type, int subscribers, int64_t retries = 2) {
  store::QueueRecord q;
  q.type = std::move(type);
  q.retries = retries;
  q.retries_delay = 10;
  q.message_timeout = 30;
  for (int i = 0; i < subscribers; ++i)
    q.subscribers.push_back({"s" + std::to_string(i), "http://h/" + std::to_string(i), {}});
  return q;
}

TEST(PushPlanTest, MulticastRetriesEachSubscriberOnItsOwn) {
  auto q = Queue("multicast", 2);
  auto plan = NewPlan(q, {}, kNow);
  EXPECT_EQ(plan.Due(kNow), (std::vector<size_t>{0, 1}));
  plan.deliveries[0].in_flight = plan.deliveries[1].in_flight = true;
  OnAnswer(plan, 0, 200, "", q, kNow);
  OnAnswer(plan, 1, 500, "", q, kNow);
  EXPECT_EQ(plan.deliveries[0].status, DeliveryStatus::kDeleted);
  EXPECT_EQ(plan.deliveries[1].status, DeliveryStatus::kRetrying);
  EXPECT_EQ(plan.deliveries[1].retries_remaining, 1);
  EXPECT_EQ(plan.deliveries[1].msg, "subscriber answered 500");
  EXPECT_TRUE(plan.Due(kNow + 9'999).empty());
  EXPECT_EQ(plan.NextDue(), kNow + 10'000);
  EXPECT_EQ(plan.Due(kNow + 10'000), (std::vector<size_t>{1}));
  OnAnswer(plan, 1, 0, "connection refused", q, kNow + 10'000);
  EXPECT_EQ(plan.deliveries[1].retries_remaining, 0);
  EXPECT_FALSE(plan.Complete());
  OnAnswer(plan, 1, 503, "", q, kNow + 20'000);
  EXPECT_EQ(plan.deliveries[1].status, DeliveryStatus::kError);
  EXPECT_EQ(plan.deliveries[1].tries, 3);
  EXPECT_TRUE(plan.Complete());
  EXPECT_TRUE(plan.Failed());
}

TEST(PushPlanTest, UnicastFailsOverAtOnceThenWaitsARound) {
  auto q = Queue("unicast", 3, 1);
  auto plan = NewPlan(q, {}, kNow);
  EXPECT_EQ(plan.Due(kNow), (std::vector<size_t>{0}));
  OnAnswer(plan, 0, 500, "", q, kNow);
  EXPECT_EQ(plan.Due(kNow), (std::vector<size_t>{1}));  // the next one, now
  OnAnswer(plan, 1, 0, "timeout", q, kNow);
  OnAnswer(plan, 2, 404, "", q, kNow);  // round over: wait retries_delay
  EXPECT_TRUE(plan.Due(kNow).empty());
  EXPECT_EQ(plan.NextDue(), kNow + 10'000);
  EXPECT_EQ(plan.Due(kNow + 10'000), (std::vector<size_t>{0}));
  OnAnswer(plan, 0, 500, "", q, kNow + 10'000);
  OnAnswer(plan, 1, 200, "", q, kNow + 10'000);
  EXPECT_TRUE(plan.Complete());
  EXPECT_FALSE(plan.Failed());
}

TEST(PushPlanTest, UnicastGivesUpAfterTheLastRound) {
  auto q = Queue("unicast", 2, 0);
  auto plan = NewPlan(q, {}, kNow);
  OnAnswer(plan, 0, 500, "", q, kNow);
  OnAnswer(plan, 1, 500, "", q, kNow);
  EXPECT_TRUE(plan.Complete());
  EXPECT_TRUE(plan.Failed());
}

TEST(PushPlanTest, Unacknowledged202IsRetriedAfterTheMessageTimeout) {
  auto q = Queue("multicast", 1, 1);
  auto plan = NewPlan(q, {}, kNow);
  plan.deliveries[0].reservation = 77;
  OnAnswer(plan, 0, 202, "", q, kNow);
  EXPECT_EQ(plan.deliveries[0].status, DeliveryStatus::kReserved);
  EXPECT_EQ(plan.NextDue(), kNow + 30'000);
  ExpireReservations(plan, q, kNow + 29'999);
  EXPECT_EQ(plan.deliveries[0].status, DeliveryStatus::kReserved);
  ExpireReservations(plan, q, kNow + 30'000);
  EXPECT_EQ(plan.deliveries[0].status, DeliveryStatus::kRetrying);
  EXPECT_EQ(plan.deliveries[0].retries_remaining, 0);
  EXPECT_EQ(plan.deliveries[0].next_try_at, kNow + 30'000);  // at once: the timeout was its wait
}

TEST(PushPlanTest, AcknowledgeNeedsTheSubscribersReservation) {
  auto q = Queue("multicast", 2);
  auto plan = NewPlan(q, {}, kNow);
  plan.deliveries[0].reservation = 5;
  OnAnswer(plan, 0, 202, "", q, kNow);
  EXPECT_FALSE(Acknowledge(plan, "s0", 6));
  EXPECT_FALSE(Acknowledge(plan, "s1", 5));
  EXPECT_TRUE(Acknowledge(plan, "s0", 5));
  EXPECT_EQ(plan.deliveries[0].status, DeliveryStatus::kDeleted);
  EXPECT_FALSE(Acknowledge(plan, "s0", 5));  // once
}

TEST(PushPlanTest, RemovedSubscribersAreForgotten) {
  auto q = Queue("multicast", 2);
  auto plan = NewPlan(q, {}, kNow);
  q.subscribers.erase(q.subscribers.begin());
  EXPECT_TRUE(FollowSubscribers(plan, q, kNow));  // changed: the caller looks at it again
  ASSERT_EQ(plan.deliveries.size(), 1u);
  EXPECT_EQ(plan.deliveries[0].subscriber, "s1");
}

TEST(PushPlanTest, AMulticastMessageWhoseSubscribersWereAllReplacedGoesToTheNewOnes) {
  auto q = Queue("multicast", 1);
  auto plan = NewPlan(q, {}, kNow);
  q.subscribers = {{"new", "http://h/new", {}}};
  EXPECT_TRUE(FollowSubscribers(plan, q, kNow + 5));
  EXPECT_FALSE(plan.Complete());
  ASSERT_EQ(plan.deliveries.size(), 1u);
  EXPECT_EQ(plan.deliveries[0].subscriber, "new");
  EXPECT_EQ(plan.deliveries[0].retries_remaining, 2);
  EXPECT_EQ(plan.Due(kNow + 5), (std::vector<size_t>{0}));
  // One that reached a subscriber already is done when that one goes.
  auto two = Queue("multicast", 2);
  auto reached = NewPlan(two, {}, kNow);
  OnAnswer(reached, 0, 200, "", two, kNow);
  two.subscribers = {{"new", "http://h/new", {}}};
  EXPECT_TRUE(FollowSubscribers(reached, two, kNow));  // for the caller to settle
  EXPECT_TRUE(reached.Complete());
  EXPECT_FALSE(FollowSubscribers(reached, two, kNow));  // nothing left to change
}

TEST(PushPlanTest, AUnicastMessageTakesAddedSubscribersIntoItsFailover) {
  auto q = Queue("unicast", 1);
  auto plan = NewPlan(q, {}, kNow);
  OnAnswer(plan, 0, 500, "", q, kNow);  // the only one failed: a retry in 10 s
  EXPECT_TRUE(plan.Due(kNow).empty());
  q.subscribers.push_back({"spare", "http://h/spare", {}});
  EXPECT_TRUE(FollowSubscribers(plan, q, kNow));
  ASSERT_EQ(plan.deliveries.size(), 2u);
  EXPECT_EQ(plan.deliveries[1].subscriber, "spare");
  // s0 waits out its delay; the one added is tried now, not after it.
  EXPECT_EQ(plan.Due(kNow), (std::vector<size_t>{1}));
  {
    // Should it fail too, s0 still waits out what is left of its delay.
    PushPlan copy = plan;
    auto q2 = q;
    OnAnswer(copy, 1, 500, "", q2, kNow + 1);
    EXPECT_TRUE(copy.Due(kNow + 1).empty());
    EXPECT_EQ(copy.NextDue(), kNow + 10'000);
  }
  {
    // A message whose delay has not ended is not sent to one added meanwhile.
    auto one = Queue("unicast", 1);
    PushPlan delayed = NewPlan(one, {}, kNow);
    for (auto& d : delayed.deliveries) d.next_try_at = kNow + 60'000;
    one.subscribers.push_back({"late", "http://h/late", {}});
    FollowSubscribers(delayed, one, kNow + 1);
    EXPECT_TRUE(delayed.Due(kNow + 1).empty());
    EXPECT_EQ(delayed.cursor, 0u);
  }
  q.subscribers.erase(q.subscribers.begin());  // and replaced outright
  FollowSubscribers(plan, q, kNow);
  ASSERT_EQ(plan.deliveries.size(), 1u);
  EXPECT_EQ(plan.Due(kNow), (std::vector<size_t>{0}));
}

// A change of subscribers leaves a unicast failover where it was: the one
// in flight stays the only one sent, and the one that failed keeps its
// retry delay.
TEST(PushPlanTest, AUnicastFailoverGoesOnFromTheSameSubscriberAfterAChange) {
  auto q = Queue("unicast", 2);
  auto plan = NewPlan(q, {}, kNow);
  plan.deliveries[0].in_flight = true;
  OnAnswer(plan, 0, 503, "", q, kNow);  // s0 failed: s1 at once
  ASSERT_EQ(plan.Due(kNow), (std::vector<size_t>{1}));
  plan.deliveries[1].in_flight = true;
  q.subscribers.push_back({"s2", "http://h/2", {}});
  EXPECT_TRUE(FollowSubscribers(plan, q, kNow));
  EXPECT_TRUE(plan.Due(kNow).empty());  // s1 is in flight; s0 is not tried beside it
  EXPECT_EQ(plan.cursor, 1u);
  OnAnswer(plan, 1, 503, "", q, kNow);  // s1 failed too: s2, the round goes on
  EXPECT_EQ(plan.Due(kNow), (std::vector<size_t>{2}));
  OnAnswer(plan, 2, 503, "", q, kNow);  // the round is over: wait retries_delay
  EXPECT_TRUE(plan.Due(kNow).empty());
  EXPECT_EQ(plan.NextDue(), kNow + 10'000);
  q.subscribers.erase(q.subscribers.begin() + 1);  // another one than the cursor's goes
  FollowSubscribers(plan, q, kNow);
  EXPECT_EQ(plan.deliveries[plan.cursor].subscriber, "s0");
  EXPECT_EQ(plan.NextDue(), kNow + 10'000);
}

TEST(IronMqUrlTest, SecretsOfUserInfoAreLeftOutOfReports) {
  EXPECT_EQ(WithoutSecret("ironmq://0123456789abcdef01234567:tok@mq.example:8080/q"),
            "ironmq://0123456789abcdef01234567:***@mq.example:8080/q");
  EXPECT_EQ(WithoutSecret("https://user:pa:ss@host/x?a=b@c"), "https://user:***@host/x?a=b@c");
  EXPECT_EQ(WithoutSecret("https://token@host/x"), "https://***@host/x");
  EXPECT_EQ(WithoutSecret("http://host/a@b"), "http://host/a@b");
  EXPECT_EQ(WithoutSecret("ironmq:///q"), "ironmq:///q");
}

TEST(IronMqUrlTest, ParsesAndRefusesWhatCannotNameAQueue) {
  auto same = ParseIronMqUrl("ironmq:///orders");
  ASSERT_TRUE(same);
  EXPECT_EQ(same->queue, "orders");
  EXPECT_EQ(same->host, "");
  auto other = ParseIronMqUrl("ironmq://0123456789abcdef01234567:tok@mq.example:8080/a b");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->project_id, "0123456789abcdef01234567");
  EXPECT_EQ(other->token, "tok");
  EXPECT_EQ(other->host, "mq.example:8080");
  EXPECT_EQ(other->queue, "a b");
  for (const char* bad :
       {"ironmq://", "ironmq://host", "ironmq:///", "ironmq:///a/b", "ironmq://notaproject:tok@h/q",
        "ironmq://0123456789abcdef01234567:@h/q", "ironmq://0123456789abcdef01234567@h/q",
        "ironmq://h st/q", "ironmq://h/q?x=1", "http://h/q"})
    EXPECT_FALSE(ParseIronMqUrl(bad)) << bad;
}

TEST(PushPlanTest, AnExpiredMessageIsGivenUpSaveForATryUnderWay) {
  auto q = Queue("multicast", 3);
  auto plan = NewPlan(q, {}, kNow);
  plan.expires_at = kNow + 60'000;
  OnAnswer(plan, 0, 500, "", q, kNow);  // s0: a retry in 10 s
  EXPECT_EQ(plan.NextDue(), kNow);      // s1 and s2 are due
  plan.deliveries[1].in_flight = true;
  plan.deliveries[2].status = DeliveryStatus::kDeleted;
  EXPECT_EQ(plan.NextDue(), kNow + 10'000);
  q.retries_delay = 3600;
  OnAnswer(plan, 0, 500, "", q, kNow + 10'000);  // now an hour off: the expiry comes first
  EXPECT_EQ(plan.NextDue(), kNow + 60'000);
  EXPECT_FALSE(ExpirePlan(plan, kNow + 59'999));
  EXPECT_TRUE(ExpirePlan(plan, kNow + 60'000));
  EXPECT_EQ(plan.deliveries[0].status, DeliveryStatus::kError);
  EXPECT_EQ(plan.deliveries[0].msg, "expired before it was delivered");
  EXPECT_FALSE(plan.deliveries[1].final());  // in flight: its answer still counts
  EXPECT_EQ(plan.deliveries[2].status, DeliveryStatus::kDeleted);
  EXPECT_FALSE(plan.Complete());
  plan.deliveries[1].in_flight = false;
  EXPECT_TRUE(ExpirePlan(plan, kNow + 60'001));
  EXPECT_TRUE(plan.Complete());
  EXPECT_TRUE(plan.Failed());
  // A 202 is left to its acknowledgement or its timeout, and its deadline
  // is not pulled in to the expiry.
  PushPlan reserved = NewPlan(q, {}, kNow);
  reserved.expires_at = kNow + 60'000;
  for (size_t i = 0; i < 3; ++i) OnAnswer(reserved, i, i == 0 ? 202 : 200, "", q, kNow);
  EXPECT_EQ(reserved.NextDue(), kNow + 30'000);  // message_timeout
  q.message_timeout = 600;
  OnAnswer(reserved, 0, 202, "", q, kNow);
  EXPECT_EQ(reserved.NextDue(), kNow + 600'000);
  EXPECT_FALSE(ExpirePlan(reserved, kNow + 60'000));
  EXPECT_EQ(reserved.deliveries[0].status, DeliveryStatus::kReserved);
  PushPlan never = NewPlan(q, {}, kNow);  // expires_at 0: a plan from before the field
  EXPECT_FALSE(ExpirePlan(never, kNow + 1'000'000'000));
}

TEST(PushPlanTest, RoundTripsThroughItsEncoding) {
  auto q = Queue("unicast", 2);
  auto plan = NewPlan(q, {{"X-A", "1"}}, kNow);
  plan.expires_at = kNow + 5;
  OnAnswer(plan, 0, 500, "boom", q, kNow);
  auto back = DecodePlan(EncodePlan(plan));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->expires_at, kNow + 5);
  EXPECT_TRUE(back->unicast);
  EXPECT_EQ(back->cursor, 1u);
  EXPECT_EQ(back->headers, plan.headers);
  ASSERT_EQ(back->deliveries.size(), 2u);
  EXPECT_EQ(back->deliveries[0].msg, "boom");
  EXPECT_EQ(back->deliveries[0].tries, 1);
  EXPECT_EQ(back->deliveries[0].status, DeliveryStatus::kRetrying);
  EXPECT_FALSE(DecodePlan("{\"v\":2}"));
  EXPECT_FALSE(DecodePlan("not json"));
}

}  // namespace
}  // namespace kiln::mq
