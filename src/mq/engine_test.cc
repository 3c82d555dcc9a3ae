#include "mq/engine.h"

#include <gtest/gtest.h>

#include <future>

#include "store/rocks/rocks_store.h"
#include "tests/support/forwarding_store.h"
#include "tests/support/temp_dir.h"

namespace kiln::mq {
namespace {

constexpr char kProject[] = "0123456789abcdef01234567";

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    engine_.reset();
    store_.reset();
    auto s = store::rocks::Open({dir_.path()});
    ASSERT_TRUE(s) << s.error().message();
    store_ = std::move(*s);
    engine_ = std::make_unique<Engine>(*store_, clock_);
    auto r = engine_->Recover();
    ASSERT_TRUE(r) << r.error().message();
  }

  Result<std::vector<uint64_t>> Post(const std::string& q, std::vector<NewMessage> msgs) {
    std::promise<Result<std::vector<uint64_t>>> p;
    engine_->Post(kProject, q, std::move(msgs), [&](auto r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }
  uint64_t PostOne(const std::string& q, std::string body, int64_t delay = 0) {
    auto ids = Post(q, {{std::move(body), delay}});
    EXPECT_TRUE(ids) << ids.error().message();
    return ids->at(0);
  }
  std::vector<Message> Reserve(const std::string& q, int n = 1, std::optional<int64_t> t = {}) {
    auto r = engine_->Reserve(kProject, q, {n, t, false});
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : std::vector<Message>{};
  }

  testing::TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, PostCreatesQueueAndReserveReturnsFifo) {
  auto ids = Post("jobs", {{"a", 0}, {"b", 0}, {"c", 0}});
  ASSERT_TRUE(ids);
  ASSERT_EQ(ids->size(), 3u);
  EXPECT_LT(ids->at(0), ids->at(1));
  auto msgs = Reserve("jobs", 2);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].body, "a");
  EXPECT_EQ(msgs[1].body, "b");
  EXPECT_EQ(msgs[0].reserved_count, 1u);
  EXPECT_EQ(msgs[0].reservation_id.size(), 32u);
  EXPECT_NE(msgs[0].reservation_id, msgs[1].reservation_id);
  auto info = engine_->GetQueue(kProject, "jobs");
  EXPECT_EQ(info->size, 3u);
  EXPECT_EQ(info->total_messages, 3u);
}

TEST_F(EngineTest, ReserveOnMissingQueueIsNotFound) {
  auto r = engine_->Reserve(kProject, "nope", {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(r.error().message(), "Queue not found");
}

TEST_F(EngineTest, DeleteNeedsTheCurrentReservation) {
  PostOne("q", "x");
  auto m = Reserve("q")[0];
  auto wrong = engine_->DeleteMessage(kProject, "q", {m.id, std::string(32, '0')});
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), ErrorCode::kPermissionDenied);
  auto none = engine_->DeleteMessage(kProject, "q", {m.id, ""});
  EXPECT_FALSE(none);
  EXPECT_TRUE(engine_->DeleteMessage(kProject, "q", {m.id, m.reservation_id}));
  EXPECT_EQ(engine_->GetQueue(kProject, "q")->size, 0u);
  auto again = engine_->DeleteMessage(kProject, "q", {m.id, m.reservation_id});
  EXPECT_EQ(again.error().code(), ErrorCode::kNotFound);
}

TEST_F(EngineTest, ExpiredReservationIsStaleAndMessageComesBack) {
  PostOne("q", "x");
  auto m = Reserve("q", 1, 30)[0];
  clock_.Advance(30'000);
  auto del = engine_->DeleteMessage(kProject, "q", {m.id, m.reservation_id});
  ASSERT_FALSE(del);
  EXPECT_EQ(del.error().code(), ErrorCode::kPermissionDenied);
  auto again = Reserve("q");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].id, m.id);
  EXPECT_EQ(again[0].reserved_count, 2u);
  EXPECT_NE(again[0].reservation_id, m.reservation_id);
}

TEST_F(EngineTest, TouchGivesANewReservationAndExtends) {
  PostOne("q", "x");
  auto m = Reserve("q", 1, 30)[0];
  clock_.Advance(20'000);
  auto fresh = engine_->Touch(kProject, "q", m.id, m.reservation_id, 60);
  ASSERT_TRUE(fresh);
  EXPECT_NE(*fresh, m.reservation_id);
  EXPECT_FALSE(engine_->Touch(kProject, "q", m.id, m.reservation_id, {}));  // old one is stale
  clock_.Advance(30'000);  // past the first deadline, within the touched one
  EXPECT_TRUE(Reserve("q").empty());
  EXPECT_TRUE(engine_->DeleteMessage(kProject, "q", {m.id, *fresh}));
}

TEST_F(EngineTest, ReleaseWithDelay) {
  PostOne("q", "x");
  auto m = Reserve("q")[0];
  ASSERT_TRUE(engine_->Release(kProject, "q", m.id, m.reservation_id, 10));
  EXPECT_TRUE(Reserve("q").empty());
  clock_.Advance(10'000);
  EXPECT_EQ(Reserve("q").size(), 1u);
}

TEST_F(EngineTest, DelayedPostIsInvisibleUntilDue) {
  PostOne("q", "later", 5);
  PostOne("q", "now");
  auto first = Reserve("q", 10);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].body, "now");
  clock_.Advance(5'000);
  auto second = Reserve("q", 10);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].body, "later");
}

TEST_F(EngineTest, MessagesExpire) {
  ASSERT_TRUE(engine_->PutQueue(kProject, "q", {.message_expiration = 60}));
  PostOne("q", "x");
  clock_.Advance(60'000);
  engine_->Tick();
  EXPECT_EQ(engine_->GetQueue(kProject, "q")->size, 0u);
  EXPECT_TRUE(Reserve("q").empty());
}

// Messages that expire out of posting order (the queue's expiration was
// lowered after the first) leave `size` too, not only those at the head.
TEST_F(EngineTest, MessagesExpireBehindALiveHead) {
  ASSERT_TRUE(engine_->PutQueue(kProject, "q", {.message_expiration = 604800}));
  PostOne("q", "kept");
  ASSERT_TRUE(engine_->PutQueue(kProject, "q", {.message_expiration = 60}));
  PostOne("q", "short 1");
  PostOne("q", "short 2");
  clock_.Advance(61'000);
  engine_->Tick();
  clock_.Advance(Queue::kSweepEvery);
  engine_->Tick();
  engine_->Flush();
  EXPECT_EQ(engine_->GetQueue(kProject, "q")->size, 1u);
  auto left = engine_->Peek(kProject, "q", 10);
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].body, "kept");
}

TEST_F(EngineTest, OverReservedMessageMovesToDeadLetterQueue) {
  QueueSettings s;
  s.dead_letter_queue = "dlq";
  s.max_reservations = 2;
  ASSERT_TRUE(engine_->PutQueue(kProject, "q", s));
  auto id = PostOne("q", "poison");
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(Reserve("q", 1, 30).size(), 1u);
    clock_.Advance(30'000);
  }
  EXPECT_TRUE(Reserve("q").empty());  // the third reserve moves it
  engine_->Flush();
  auto dead = engine_->Peek(kProject, "dlq", 10);
  ASSERT_TRUE(dead);
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ((*dead)[0].id, id);
  EXPECT_EQ((*dead)[0].body, "poison");
  EXPECT_EQ((*dead)[0].reserved_count, 2u);
  EXPECT_EQ(engine_->GetQueue(kProject, "q")->size, 0u);
}

TEST_F(EngineTest, PeekAndGetDoNotReserve) {
  auto id = PostOne("q", "x");
  auto peek = engine_->Peek(kProject, "q", 5);
  ASSERT_EQ(peek->size(), 1u);
  EXPECT_EQ(engine_->GetMessage(kProject, "q", id)->reserved_count, 0u);
  auto m = Reserve("q");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].reserved_count, 1u);
  EXPECT_TRUE(engine_->Peek(kProject, "q", 5)->empty());
}

TEST_F(EngineTest, BatchDeleteIsAllOrNothing) {
  auto ids = *Post("q", {{"a", 0}, {"b", 0}});
  auto m = Reserve("q")[0];  // "a" reserved, "b" ready
  auto bad = engine_->DeleteMessages(kProject, "q", {{ids[1], ""}, {m.id, "stale"}});
  EXPECT_FALSE(bad);
  EXPECT_EQ(engine_->GetQueue(kProject, "q")->size, 2u);
  EXPECT_TRUE(engine_->DeleteMessages(kProject, "q", {{ids[1], ""}, {m.id, m.reservation_id}}));
  EXPECT_EQ(engine_->GetQueue(kProject, "q")->size, 0u);
}

TEST_F(EngineTest, ReserveWithDeleteRemovesAtOnce) {
  PostOne("q", "x");
  auto r = engine_->Reserve(kProject, "q", {1, {}, true});
  ASSERT_EQ(r->size(), 1u);
  EXPECT_TRUE(r->at(0).reservation_id.empty());
  EXPECT_EQ(engine_->GetQueue(kProject, "q")->size, 0u);
}

// The count of messages ever posted is written by the tick, not by each
// post: after one tick it is in the store even if the engine never flushes.
TEST_F(EngineTest, TheTickWritesTheTotalMessageCount) {
  ASSERT_TRUE(engine_->PutQueue(kProject, "counted", {}));
  PostOne("counted", "a");
  PostOne("counted", "b");
  auto stored_total = [&] {
    uint64_t total = 0;
    store_->ForEachQueue([&](const store::QueueRecord& r, uint64_t t) {
      if (r.name == "counted") total = t;
    });
    return total;
  };
  // Waits for what was appended so far (the log keeps its order).
  auto synced = [&] {
    std::promise<Result<void>> p;
    store_->Commit(
        {}, [&](Result<void> r) { p.set_value(std::move(r)); }, store::Store::Writer::kCommitter);
    return p.get_future().get();
  };
  ASSERT_TRUE(synced());
  EXPECT_EQ(stored_total(), 0u);  // posts alone do not write it
  engine_->Tick();
  ASSERT_TRUE(synced());
  EXPECT_EQ(stored_total(), 2u);
  PostOne("counted", "c");
  engine_->Tick();
  ASSERT_TRUE(synced());
  EXPECT_EQ(stored_total(), 3u);
}

TEST_F(EngineTest, EverythingSurvivesReopen) {
  QueueSettings s;
  s.message_timeout = 120;
  ASSERT_TRUE(engine_->PutQueue(kProject, "q", s));
  auto ready = PostOne("q", "ready");
  auto delayed = PostOne("q", "delayed", 1000);
  PostOne("q", "reserved");
  auto reserved = Reserve("q", 2);  // "ready" and "reserved"
  ASSERT_EQ(reserved.size(), 2u);
  ASSERT_TRUE(engine_->DeleteMessage(kProject, "q", {ready, reserved[0].reservation_id}));
  Open();
  auto info = engine_->GetQueue(kProject, "q");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->record.message_timeout, 120);
  EXPECT_EQ(info->size, 2u);
  EXPECT_EQ(info->total_messages, 3u);
  EXPECT_TRUE(Reserve("q").empty());  // one delayed, one still reserved
  clock_.Advance(120'000);            // reservation over
  auto back = Reserve("q");
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].body, "reserved");
  EXPECT_EQ(back[0].reserved_count, 2u);
  auto late = PostOne("q", "new");
  EXPECT_GT(late, delayed);  // ids keep growing across restarts
}

// Two queues whose progressive alerts target each other would post notices
// forever; each notice is one hop further than what caused it, and past
// kMaxHops the post is refused: the loop ends.
TEST_F(EngineTest, AlertsFeedingEachOtherStop) {
  auto alert_to = [&](const std::string& q, const std::string& target) {
    QueueSettings s;
    store::Alert a;
    a.type = "progressive";
    a.trigger = 1;
    a.queue = target;
    s.alerts = std::vector<store::Alert>{a};
    ASSERT_TRUE(engine_->PutQueue(kProject, q, s));
  };
  alert_to("ping", "pong");
  alert_to("pong", "ping");
  PostOne("ping", "start");
  uint64_t total = 0;
  for (int i = 0; i < 50; ++i) engine_->Flush();  // each notice's post completes through it
  total = engine_->GetQueue(kProject, "ping")->size + engine_->GetQueue(kProject, "pong")->size;
  EXPECT_EQ(total, static_cast<uint64_t>(kMaxHops) + 1);  // the first post and ten notices
  engine_->Flush();
  EXPECT_EQ(engine_->GetQueue(kProject, "ping")->size + engine_->GetQueue(kProject, "pong")->size,
            total);
  auto far = Post("ping", {{"forwarded too often", 0, {}, kMaxHops + 1}});
  ASSERT_FALSE(far);
  EXPECT_EQ(far.error().code(), ErrorCode::kInvalidArgument);
}

// Ids are never handed out twice, even when every message was deleted and
// the clock went back across a restart (a client holding an old id must
// not reach a new message).
TEST_F(EngineTest, IdsStayUniqueWhenTheClockGoesBackAcrossARestart) {
  auto first = PostOne("q", "x");
  ASSERT_EQ(engine_->Reserve(kProject, "q", {1, {}, true})->size(), 1u);  // and deleted
  clock_.Advance(-3'600'000);
  Open();
  EXPECT_GT(PostOne("q", "y"), first);
}

// The store's floor is raised a lease at a time while ids are handed out.
TEST_F(EngineTest, TheIdFloorKeepsAheadOfIdsPastItsLease) {
  engine_ = std::make_unique<Engine>(*store_, clock_, EngineOptions{.id_lease = 3});
  ASSERT_TRUE(engine_->Recover());
  uint64_t last = 0;
  for (int i = 0; i < 10; ++i) {
    last = PostOne("q", "m" + std::to_string(i));
    auto floor = store_->MessageIdFloor();
    ASSERT_TRUE(floor);
    EXPECT_GE(*floor, last);
  }
  ASSERT_EQ(engine_->Reserve(kProject, "q", {10, {}, true})->size(), 10u);
  clock_.Advance(-3'600'000);
  Open();
  EXPECT_GT(PostOne("q", "after"), last);
}

TEST_F(EngineTest, DeletedQueueStartsEmptyWhenRecreated) {
  PostOne("q", "x");
  ASSERT_TRUE(engine_->DeleteQueue(kProject, "q"));
  EXPECT_FALSE(engine_->GetQueue(kProject, "q"));
  PostOne("q", "y");
  Open();
  auto m = Reserve("q", 10);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].body, "y");
}

TEST_F(EngineTest, ListQueuesPagesByName) {
  for (auto name : {"a1", "a2", "b1", "c1"}) ASSERT_TRUE(engine_->PutQueue(kProject, name, {}));
  ASSERT_TRUE(engine_->PutQueue("ffffffffffffffffffffffff", "a0", {}));
  EXPECT_EQ(engine_->ListQueues(kProject, "", "", 30),
            (std::vector<std::string>{"a1", "a2", "b1", "c1"}));
  EXPECT_EQ(engine_->ListQueues(kProject, "", "a2", 2), (std::vector<std::string>{"b1", "c1"}));
  EXPECT_EQ(engine_->ListQueues(kProject, "a", "", 30), (std::vector<std::string>{"a1", "a2"}));
  EXPECT_EQ(engine_->ListQueues(kProject, "", "a15", 1), (std::vector<std::string>{"a2"}));
}

TEST_F(EngineTest, RejectsOutOfRangeValues) {
  EXPECT_EQ(Post("q", {{"x", -1}}).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Post("q", {{"x", kMaxDelay + 1}}).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Post("q", {{std::string(64 * 1024 + 1, 'x'), 0}}).error().code(), ErrorCode::kTooLarge);
  EXPECT_EQ(Post("q", std::vector<NewMessage>(101, {"x", 0})).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_FALSE(engine_->PutQueue(kProject, "q", {.message_timeout = 29}));
  EXPECT_FALSE(engine_->PutQueue(kProject, "q", {.message_timeout = 86401}));
  EXPECT_FALSE(engine_->PutQueue(kProject, "bad/name", {}));
  PostOne("q", "x");
  EXPECT_FALSE(engine_->Reserve(kProject, "q", {101, {}, false}));
  EXPECT_FALSE(engine_->Reserve(kProject, "q", {1, 29, false}));
  EXPECT_EQ(engine_->GetQueue(kProject, "q")->size, 1u);  // nothing lost
}

TEST_F(EngineTest, PostWakesParkedWaiter) {
  ASSERT_TRUE(engine_->PutQueue(kProject, "q", {}));
  int woken = 0;
  auto w = std::make_shared<Waiter>(Waiter{[&] { ++woken; }});
  auto r = engine_->Reserve(kProject, "q", {}, w);
  ASSERT_TRUE(r && r->empty());
  PostOne("q", "x");
  EXPECT_EQ(woken, 1);
}

// A project has at most max_queues_per_project queues: the post that would
// make one more is refused (403), others' and existing queues are not.
TEST(EngineLimitTest, AProjectHasAtMostItsQueueLimit) {
  testing::TempDir dir;
  FakeClock clock;
  auto store = std::move(*store::rocks::Open({dir.path()}));
  Engine engine(*store, clock, EngineOptions{.max_queues_per_project = 2});
  ASSERT_TRUE(engine.Recover());
  auto post = [&](const std::string& project, const std::string& q) {
    std::promise<Result<std::vector<uint64_t>>> p;
    engine.Post(project, q, {{"m", 0}}, [&](auto r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  };
  constexpr char kOther[] = "fedcba9876543210fedcba98";
  ASSERT_TRUE(post(kProject, "a"));
  ASSERT_TRUE(post(kProject, "b"));
  auto refused = post(kProject, "c");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_FALSE(engine.PutQueue(kProject, "c", {}));
  ASSERT_TRUE(post(kProject, "a"));  // an existing one takes posts
  ASSERT_TRUE(post(kOther, "c"));    // another project's count is its own
  ASSERT_TRUE(engine.DeleteQueue(kProject, "b"));
  ASSERT_TRUE(post(kProject, "c"));
  Engine again(*store, clock, EngineOptions{.max_queues_per_project = 2});  // counted at start
  ASSERT_TRUE(again.Recover());
  EXPECT_FALSE(again.PutQueue(kProject, "d", {}));
}

// A project's queues hold at most max_messages_per_project messages in all:
// a post that would pass the count (of the last Tick, plus the posts taken
// since) is refused (403), after the checks of its messages;
// another project's count is its own, and deletes make room again. The
// count is there from the start after a restart.
TEST(EngineLimitTest, AProjectHoldsAtMostItsMessageLimit) {
  testing::TempDir dir;
  FakeClock clock;
  auto store = std::move(*store::rocks::Open({dir.path()}));
  auto engine =
      std::make_unique<Engine>(*store, clock, EngineOptions{.max_messages_per_project = 5});
  ASSERT_TRUE(engine->Recover());
  auto post = [&](const std::string& project, const std::string& q, size_t n) {
    std::vector<NewMessage> msgs(n, NewMessage{"m"});
    std::promise<Result<std::vector<uint64_t>>> p;
    engine->Post(project, q, std::move(msgs), [&](auto r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  };
  constexpr char kOther[] = "fedcba9876543210fedcba98";
  ASSERT_TRUE(post(kProject, "a", 2));
  ASSERT_TRUE(post(kProject, "b", 2));
  auto refused = post(kProject, "a", 2);  // counted as taken, before any Tick
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(refused.error().message().find("at most 5 messages"), std::string::npos);
  std::promise<Result<std::vector<uint64_t>>> bad;
  engine->Post(kProject, "a", {NewMessage{"m", -5}}, [&](auto r) { bad.set_value(std::move(r)); });
  EXPECT_EQ(bad.get_future().get().error().code(), ErrorCode::kInvalidArgument);
  ASSERT_TRUE(post(kProject, "c", 1));  // up to the limit
  ASSERT_TRUE(post(kOther, "a", 5));
  engine->Tick();
  EXPECT_FALSE(post(kProject, "a", 1));
  ASSERT_TRUE(engine->Clear(kProject, "a"));
  engine->Tick();
  EXPECT_TRUE(post(kProject, "a", 1));
  engine->Flush();
  engine.reset();
  Engine again(*store, clock, EngineOptions{.max_messages_per_project = 5});
  ASSERT_TRUE(again.Recover());  // 2 + 1 + 1 held, without a Tick
  std::promise<Result<std::vector<uint64_t>>> p;
  again.Post(kProject, "a", {NewMessage{"m"}, NewMessage{"m"}},
             [&](auto r) { p.set_value(std::move(r)); });
  EXPECT_FALSE(p.get_future().get());
}

// At shutdown every parked long poll is woken, and one that comes to park
// after that is woken at once instead of sleeping its wait out.
TEST_F(EngineTest, AfterWakeAllNobodyParks) {
  ASSERT_TRUE(engine_->PutQueue(kProject, "q", {}));
  int early = 0, late = 0;
  auto before = std::make_shared<Waiter>(Waiter{[&] { ++early; }});
  ASSERT_TRUE(engine_->Reserve(kProject, "q", {}, before)->empty());
  engine_->WakeAll();
  EXPECT_EQ(early, 1);
  auto after = std::make_shared<Waiter>(Waiter{[&] { ++late; }});
  ASSERT_TRUE(engine_->Reserve(kProject, "q", {}, after)->empty());
  EXPECT_EQ(late, 1);
  EXPECT_FALSE(engine_->CancelWait(kProject, "q", after.get()));  // never parked
}

// A post wakes as many parked consumers as it brings messages, first
// parked first: a thousand long polls are not all woken for one message.
// One woken that leaves it (its client gone) passes the wake on.
TEST_F(EngineTest, APostWakesAsManyWaitersAsItBringsMessagesInTheOrderTheyParked) {
  ASSERT_TRUE(engine_->PutQueue(kProject, "q", {}));
  std::vector<int> woken;
  std::vector<std::shared_ptr<Waiter>> waiters;
  for (int i = 0; i < 1000; ++i) {
    waiters.push_back(std::make_shared<Waiter>(Waiter{[&woken, i] { woken.push_back(i); }}));
    auto r = engine_->Reserve(kProject, "q", {}, waiters.back());
    ASSERT_TRUE(r && r->empty());
  }
  PostOne("q", "one");
  EXPECT_EQ(woken, std::vector<int>{0});
  EXPECT_FALSE(engine_->CancelWait(kProject, "q", waiters[1].get()));  // gave up: not woken
  std::promise<Result<std::vector<uint64_t>>> p;
  engine_->Post(kProject, "q", {{"two", 0, {}}, {"three", 0, {}}},
                [&](auto r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(p.get_future().get());
  EXPECT_EQ(woken, (std::vector<int>{0, 2, 3}));
  EXPECT_TRUE(engine_->CancelWait(kProject, "q", waiters[3].get()));
  engine_->PassWake(kProject, "q");
  EXPECT_EQ(woken, (std::vector<int>{0, 2, 3, 4}));
  for (auto& w : waiters) engine_->CancelWait(kProject, "q", w.get());
}

// A reservation that runs out is noticed by whoever comes first (a peek
// here, before the tick): a consumer parked in a long poll is woken for it.
TEST_F(EngineTest, AMessageThatComesDueWakesAParkedWaiterWhoeverNoticesIt) {
  PostOne("q", "m");
  ASSERT_EQ(Reserve("q", 1, 30).size(), 1u);
  int woken = 0;
  auto w = std::make_shared<Waiter>(Waiter{[&] { ++woken; }});
  auto r = engine_->Reserve(kProject, "q", {}, w);
  ASSERT_TRUE(r && r->empty());
  clock_.Advance(30'000);
  auto peeked = engine_->Peek(kProject, "q", 1);
  ASSERT_TRUE(peeked);
  EXPECT_EQ(peeked->size(), 1u);
  EXPECT_EQ(woken, 1);
}

// Runs `hook` once, inside the next Append, before the batch is written:
// where another request may try to get in between.
class HookedAppends : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  std::function<void()> hook;
  void Append(store::MessageBatch b) override {
    if (auto h = std::exchange(hook, nullptr)) h();
    real_.Append(std::move(b));
  }
};

// A release and the reserve it wakes reach the store in the order the index
// saw them: after a restart the message is still the second consumer's.
TEST(EngineOrderTest, AReleaseAndTheReserveAfterItAreStoredInThatOrder) {
  testing::TempDir dir;
  FakeClock clock;
  uint64_t id = 0;
  std::string second;
  {
    auto real = std::move(*store::rocks::Open({dir.path()}));
    HookedAppends store(*real);
    Engine engine(store, clock);
    ASSERT_TRUE(engine.Recover());
    std::promise<Result<std::vector<uint64_t>>> p;
    engine.Post(kProject, "q", {{"m", 0}}, [&](auto r) { p.set_value(std::move(r)); });
    id = p.get_future().get()->at(0);
    auto first = engine.Reserve(kProject, "q", {1, 60, false});
    ASSERT_TRUE(first && first->size() == 1u);
    std::future<Result<std::vector<Message>>> racing;
    store.hook = [&] {
      // Another consumer's reserve, while the release is being recorded.
      racing = std::async(std::launch::async, [&] {
        return engine.Reserve(kProject, "q", {1, 60, false});
      });
      racing.wait_for(std::chrono::milliseconds(200));
    };
    ASSERT_TRUE(engine.Release(kProject, "q", id, (*first)[0].reservation_id, 0));
    auto got = racing.get();
    ASSERT_TRUE(got && got->size() == 1u);
    second = (*got)[0].reservation_id;
    engine.Flush();
  }
  auto store = std::move(*store::rocks::Open({dir.path()}));
  Engine engine(*store, clock);
  ASSERT_TRUE(engine.Recover());
  auto again = engine.Reserve(kProject, "q", {1, {}, false});
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->empty()) << "handed out again while the second reservation holds";
  EXPECT_TRUE(engine.DeleteMessage(kProject, "q", {id, second}));
}

// A real store that cannot read one message's body.
class UnreadableBody : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  uint64_t unreadable = 0;
  Result<std::string> GetBody(uint64_t q, uint64_t id) override {
    if (id == unreadable)
      return Fail(Error::Internal("store: Corruption: block checksum mismatch"));
    return real_.GetBody(q, id);
  }
};

// A store whose queue-id or queue-record writes fail while `failing`.
class FailingQueueWrites : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  Result<uint64_t> NextQueueId() override {
    if (failing == 1) return Fail(Error::Unavailable("disk full"));
    return ForwardingStore::NextQueueId();
  }
  Result<void> PutQueue(const store::QueueRecord& q) override {
    if (failing == 2) return Fail(Error::Unavailable("disk full"));
    return ForwardingStore::PutQueue(q);
  }
  void Commit(store::MessageBatch b, Done d, Writer w) override {
    bool drop = std::any_of(b.ops().begin(), b.ops().end(), [](const auto& op) {
      return op.kind == store::MessageBatch::Kind::kDropQueue;
    });
    if (failing == 3 && drop) return d(Fail(Error::Unavailable("store write failed")));
    if (failing == 4) return d(Fail(Error::Unavailable("disk full")));
    ForwardingStore::Commit(std::move(b), std::move(d), w);
  }
  int failing = 0;
};

// A queue delete the store refuses changes nothing: the queue and its
// messages are all there, now and after a restart, and a later delete works.
TEST(EngineQueueWriteFailureTest, ARefusedQueueDeleteLeavesTheQueueWhole) {
  testing::TempDir dir;
  FakeClock clock;
  auto real = std::move(*store::rocks::Open({dir.path()}));
  FailingQueueWrites store(*real);
  auto engine = std::make_unique<Engine>(store, clock);
  ASSERT_TRUE(engine->Recover());
  std::promise<Result<std::vector<uint64_t>>> p;
  engine->Post(kProject, "q", {{"keep", 0}}, [&](auto r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(p.get_future().get());
  store.failing = 3;
  auto refused = engine->DeleteQueue(kProject, "q");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(engine->GetQueue(kProject, "q")->size, 1u);
  EXPECT_EQ(engine->Peek(kProject, "q", 1)->at(0).body, "keep");
  store.failing = 0;
  engine = std::make_unique<Engine>(store, clock);
  ASSERT_TRUE(engine->Recover());
  EXPECT_EQ(engine->GetQueue(kProject, "q")->size, 1u);
  ASSERT_TRUE(engine->DeleteQueue(kProject, "q"));
  EXPECT_FALSE(engine->GetQueue(kProject, "q"));
  engine->Flush();
  engine = std::make_unique<Engine>(store, clock);
  ASSERT_TRUE(engine->Recover());
  EXPECT_FALSE(engine->GetQueue(kProject, "q"));
}

// A queue whose id or record could not be written is not created: the post
// that would have created it fails and nothing of it is left, in memory or
// after a restart; the next try creates it.
TEST(EngineQueueWriteFailureTest, AQueueIsCreatedOnlyWhenItsIdAndRecordAreWritten) {
  testing::TempDir dir;
  FakeClock clock;
  auto real = std::move(*store::rocks::Open({dir.path()}));
  FailingQueueWrites store(*real);
  auto engine = std::make_unique<Engine>(store, clock);
  ASSERT_TRUE(engine->Recover());
  auto post = [&](const std::string& q) {
    std::promise<Result<std::vector<uint64_t>>> p;
    engine->Post(kProject, q, {{"body", 0}}, [&](auto r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  };
  for (int mode : {1, 2}) {
    store.failing = mode;
    auto r = post("q");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable);
    EXPECT_FALSE(engine->GetQueue(kProject, "q"));
  }
  store.failing = 0;
  engine = std::make_unique<Engine>(store, clock);
  ASSERT_TRUE(engine->Recover());
  EXPECT_FALSE(engine->GetQueue(kProject, "q"));
  ASSERT_TRUE(post("q"));
  ASSERT_TRUE(post("other"));  // its own id: two queues, one message each
  EXPECT_EQ(engine->GetQueue(kProject, "q")->size, 1u);
  EXPECT_EQ(engine->GetQueue(kProject, "other")->size, 1u);
}

// A post the store refuses is not counted in total_messages, now or after
// a restart: the queue's total is of the messages it took.
TEST(EngineQueueWriteFailureTest, ARefusedPostIsNotCounted) {
  testing::TempDir dir;
  FakeClock clock;
  auto real = std::move(*store::rocks::Open({dir.path()}));
  FailingQueueWrites store(*real);
  auto engine = std::make_unique<Engine>(store, clock);
  ASSERT_TRUE(engine->Recover());
  auto post = [&](std::vector<NewMessage> m) {
    std::promise<Result<std::vector<uint64_t>>> p;
    engine->Post(kProject, "q", std::move(m), [&](auto r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  };
  ASSERT_TRUE(post({{"taken", 0}}));
  store.failing = 4;
  EXPECT_FALSE(post({{"refused", 0}, {"refused too", 0}}));
  EXPECT_EQ(engine->GetQueue(kProject, "q")->total_messages, 1u);
  EXPECT_EQ(engine->GetQueue(kProject, "q")->size, 1u);
  store.failing = 0;
  ASSERT_TRUE(post({{"taken", 0}}));
  EXPECT_EQ(engine->GetQueue(kProject, "q")->total_messages, 2u);
  engine->Flush();
  engine = std::make_unique<Engine>(store, clock);
  ASSERT_TRUE(engine->Recover());
  EXPECT_EQ(engine->GetQueue(kProject, "q")->total_messages, 2u);
}

// A dead-letter move that fails (its queue cannot be made) puts the message
// back: it is not lost from the index, and a later reserve moves it.
TEST(EngineQueueWriteFailureTest, AFailedDeadLetterMoveKeepsTheMessage) {
  testing::TempDir dir;
  FakeClock clock;
  auto real = std::move(*store::rocks::Open({dir.path()}));
  FailingQueueWrites store(*real);
  Engine engine(store, clock);
  ASSERT_TRUE(engine.Recover());
  QueueSettings s;
  s.dead_letter_queue = "dlq";
  s.max_reservations = 1;
  ASSERT_TRUE(engine.PutQueue(kProject, "q", s));
  std::promise<Result<std::vector<uint64_t>>> p;
  engine.Post(kProject, "q", {{"poison", 0}}, [&](auto r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(p.get_future().get());
  ASSERT_EQ(engine.Reserve(kProject, "q", {1, 30, false})->size(), 1u);
  clock.Advance(30'000);
  store.failing = 1;  // the dead letter queue cannot be made
  // A long poll is not woken for the message it could not move: it would
  // take it back, fail again and spin for its whole wait.
  bool woken = false;
  auto waiter = std::make_shared<Waiter>();
  waiter->wake = [&] { woken = true; };
  EXPECT_TRUE(engine.Reserve(kProject, "q", {1, {}, false}, waiter)->empty());
  EXPECT_FALSE(woken);
  engine.CancelWait(kProject, "q", waiter.get());
  engine.Flush();
  EXPECT_EQ(engine.GetQueue(kProject, "q")->size, 1u);
  store.failing = 0;
  EXPECT_TRUE(engine.Reserve(kProject, "q", {1, {}, false})->empty());  // back in 5 s, not now
  engine.Flush();
  EXPECT_EQ(engine.GetQueue(kProject, "q")->size, 1u);
  clock.Advance(5'000);
  engine.Tick();
  EXPECT_TRUE(engine.Reserve(kProject, "q", {1, {}, false})->empty());  // moved now
  engine.Flush();
  EXPECT_EQ(engine.GetQueue(kProject, "q")->size, 0u);
  auto dead = engine.Peek(kProject, "dlq", 10);
  ASSERT_TRUE(dead);
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ((*dead)[0].body, "poison");
}

// A reserve that meets a body it cannot read returns what it took before
// it, and loses nothing: expired ones are removed, the unreadable one stays.
TEST(EngineBodyFailureTest, AReserveStopsAtAnUnreadableBodyAndKeepsWhatItTook) {
  testing::TempDir dir;
  FakeClock clock;
  auto real = std::move(*store::rocks::Open({dir.path()}));
  UnreadableBody store(*real);
  Engine engine(store, clock);
  ASSERT_TRUE(engine.Recover());
  auto post = [&](std::vector<NewMessage> msgs) {
    std::promise<Result<std::vector<uint64_t>>> p;
    engine.Post(kProject, "q", std::move(msgs), [&](auto r) { p.set_value(std::move(r)); });
    return *p.get_future().get();
  };
  auto ids = post({{"a", 0}, {"b", 0}, {"c", 0}});
  store.unreadable = ids[1];
  auto got = engine.Reserve(kProject, "q", {3, {}, false});
  ASSERT_TRUE(got);
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].body, "a");
  // "a" stays reserved: a second reserve meets "b" first and fails, saying why.
  auto again = engine.Reserve(kProject, "q", {3, {}, false});
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("checksum"), std::string::npos);
  store.unreadable = 0;
  auto rest = engine.Reserve(kProject, "q", {3, {}, false});
  ASSERT_TRUE(rest);
  ASSERT_EQ(rest->size(), 2u);
  EXPECT_EQ((*rest)[0].body, "b");
  EXPECT_EQ((*rest)[1].body, "c");
}

using testing::LateCompletions;

// A clear that comes while a post is being written takes the post's
// messages: the queue is empty and works, in memory and after a restart.
TEST(EngineClearRaceTest, AClearDuringAPostsWriteLeavesAWorkingEmptyQueue) {
  testing::TempDir dir;
  FakeClock clock;
  {
    auto real = std::move(*store::rocks::Open({dir.path()}));
    LateCompletions store(*real);
    Engine engine(store, clock);
    ASSERT_TRUE(engine.Recover());
    ASSERT_TRUE(engine.PutQueue(kProject, "q", {}));
    store.hold = true;
    std::optional<Result<std::vector<uint64_t>>> posted;
    engine.Post(kProject, "q", {{"posted before the clear", 0}},
                [&](auto r) { posted = std::move(r); });
    ASSERT_EQ(store.held.size(), 1u);
    store.hold = false;
    ASSERT_TRUE(engine.Clear(kProject, "q"));
    engine.Flush();  // the clear's delete is written after the post
    for (auto& f : store.held) f();
    ASSERT_TRUE(posted && *posted);  // acknowledged: it came before the clear
    auto got = engine.Reserve(kProject, "q", {1, {}, false});
    ASSERT_TRUE(got) << got.error().message();
    EXPECT_TRUE(got->empty());
    EXPECT_EQ(engine.GetQueue(kProject, "q")->size, 0u);
    std::promise<Result<std::vector<uint64_t>>> p;
    engine.Post(kProject, "q", {{"after", 0}}, [&](auto r) { p.set_value(std::move(r)); });
    ASSERT_TRUE(p.get_future().get());
    auto after = engine.Reserve(kProject, "q", {1, {}, true});
    ASSERT_TRUE(after);
    ASSERT_EQ(after->size(), 1u);
    EXPECT_EQ((*after)[0].body, "after");
    engine.Flush();
  }
  auto store = std::move(*store::rocks::Open({dir.path()}));
  Engine engine(*store, clock);
  ASSERT_TRUE(engine.Recover());
  EXPECT_EQ(engine.GetQueue(kProject, "q")->size, 0u);
}

// A clear of the dead letter queue that comes while a move into it is being
// written takes the moved message: both queues are empty and stay so after
// a restart, and the dead letter queue works.
TEST(EngineClearRaceTest, AClearDuringADeadLetterMoveTakesTheMovedMessage) {
  testing::TempDir dir;
  FakeClock clock;
  {
    auto real = std::move(*store::rocks::Open({dir.path()}));
    LateCompletions store(*real);
    Engine engine(store, clock);
    ASSERT_TRUE(engine.Recover());
    QueueSettings s;
    s.dead_letter_queue = "dlq";
    s.max_reservations = 1;
    ASSERT_TRUE(engine.PutQueue(kProject, "q", s));
    ASSERT_TRUE(engine.PutQueue(kProject, "dlq", {}));
    std::promise<Result<std::vector<uint64_t>>> p;
    engine.Post(kProject, "q", {{"poison", 0}}, [&](auto r) { p.set_value(std::move(r)); });
    ASSERT_TRUE(p.get_future().get());
    ASSERT_EQ(engine.Reserve(kProject, "q", {1, 30, false})->size(), 1u);
    clock.Advance(30'000);
    store.hold = true;
    EXPECT_TRUE(engine.Reserve(kProject, "q", {1, {}, false})->empty());  // moves it
    ASSERT_EQ(store.held.size(), 1u);
    store.hold = false;
    ASSERT_TRUE(engine.Clear(kProject, "dlq"));
    engine.Flush();
    for (auto& f : store.held) f();
    engine.Flush();
    EXPECT_EQ(engine.GetQueue(kProject, "dlq")->size, 0u);
    EXPECT_EQ(engine.GetQueue(kProject, "q")->size, 0u);
    auto got = engine.Reserve(kProject, "dlq", {1, {}, false});
    ASSERT_TRUE(got) << got.error().message();
    EXPECT_TRUE(got->empty());
    std::promise<Result<std::vector<uint64_t>>> p2;
    engine.Post(kProject, "dlq", {{"after", 0}}, [&](auto r) { p2.set_value(std::move(r)); });
    ASSERT_TRUE(p2.get_future().get());
    engine.Flush();
  }
  auto store = std::move(*store::rocks::Open({dir.path()}));
  Engine engine(*store, clock);
  ASSERT_TRUE(engine.Recover());
  EXPECT_EQ(engine.GetQueue(kProject, "q")->size, 0u);
  auto left = engine.Peek(kProject, "dlq", 10);
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].body, "after");
}

}  // namespace
}  // namespace kiln::mq
