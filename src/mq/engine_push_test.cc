// mq::Engine's push path with a fake transport and a fake clock: what is
// sent, retries on time, the error queue, acknowledgement, and resuming
// after the engine is reopened.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mq/engine.h"
#include "store/rocks/rocks_store.h"
#include "tests/support/forwarding_store.h"
#include "tests/support/temp_dir.h"

namespace kiln::mq {
namespace {

constexpr char kProject[] = "0123456789abcdef01234567";

class FakeTransport : public PushTransport {
 public:
  struct Sent {
    PushRequest request;
    std::function<void(int, std::string)> done;
  };
  void Send(PushRequest r, std::function<void(int, std::string)> done) override {
    std::lock_guard lock(mu_);
    if (throws_ > 0) {
      --throws_;
      throw std::runtime_error("no memory for it");
    }
    sent_.push_back({std::move(r), std::move(done)});
  }
  void ThrowNext(int n) {
    std::lock_guard lock(mu_);
    throws_ = n;
  }
  std::vector<Sent> Take() {
    std::lock_guard lock(mu_);
    return std::move(sent_);
  }

 private:
  std::mutex mu_;
  std::vector<Sent> sent_;
  int throws_ = 0;
};

std::string HeaderOf(const PushRequest& r, const std::string& name) {
  for (const auto& [k, v] : r.headers)
    if (k == name) return v;
  return "";
}

class EnginePushTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open() {
    engine_.reset();
    store_.reset();
    store_ = std::move(*store::rocks::Open({dir_.path()}));
    engine_ = std::make_unique<Engine>(*store_, clock_);
    ASSERT_TRUE(engine_->Recover());
    engine_->SetPushTransport(&transport_, "http://kiln:1");
  }
  uint64_t Post(const std::string& q, std::string body) {
    std::promise<Result<std::vector<uint64_t>>> p;
    engine_->Post(kProject, q, {{std::move(body), 0, {{"X-Trace", "t"}}}},
                  [&](auto r) { p.set_value(std::move(r)); });
    auto ids = p.get_future().get();
    EXPECT_TRUE(ids);
    engine_->Flush();
    return ids->at(0);
  }
  void MakeQueue(const std::string& type, int retries) {
    QueueSettings s;
    s.type = type;
    s.subscribers = std::vector<store::Subscriber>{{"a", "http://a/hook", {{"X-Sub", "1"}}},
                                                   {"b", "http://b/hook", {}}};
    s.retries = retries;
    s.retries_delay = 10;
    s.error_queue = "errors";
    ASSERT_TRUE(engine_->PutQueue(kProject, "pq", s));
  }

  testing::TempDir dir_;
  FakeClock clock_;
  FakeTransport transport_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EnginePushTest, MulticastSendsToEverySubscriberWithHeaders) {
  MakeQueue("multicast", 1);
  auto id = Post("pq", "hello");
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 2u);
  const auto& r = sent[0].request;
  EXPECT_EQ(r.url, "http://a/hook");
  EXPECT_EQ(r.body, "hello");
  EXPECT_EQ(HeaderOf(r, "X-Sub"), "1");
  EXPECT_EQ(HeaderOf(r, "X-Trace"), "t");
  EXPECT_EQ(HeaderOf(r, "Iron-Message-Id"), std::to_string(id));
  EXPECT_EQ(HeaderOf(r, "Iron-Subscriber-Name"), "a");
  EXPECT_EQ(HeaderOf(r, "Iron-Reservation-Id").size(), 32u);
  EXPECT_EQ(HeaderOf(r, "Iron-Subscriber-Message-Url").rfind("http://kiln:1/3/projects/", 0), 0u);
  EXPECT_EQ(HeaderOf(r, kHopsHeader), "1");
  EXPECT_EQ(sent[1].request.url, "http://b/hook");
  sent[0].done(200, "");
  sent[1].done(200, "");
  auto st = engine_->PushStatus(kProject, "pq", id);
  ASSERT_TRUE(st);
  EXPECT_EQ((*st)[0].status, "deleted");
  EXPECT_EQ((*st)[1].status, "deleted");
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);
}

TEST_F(EnginePushTest, RetriesOnTimeThenGivesUpToTheErrorQueue) {
  MakeQueue("multicast", 1);
  auto id = Post("pq", "doomed");
  auto sent = transport_.Take();
  sent[0].done(200, "");
  sent[1].done(500, "");
  clock_.Advance(9'999);
  engine_->Tick();
  EXPECT_TRUE(transport_.Take().empty());
  clock_.Advance(1);
  engine_->Tick();
  auto retry = transport_.Take();
  ASSERT_EQ(retry.size(), 1u);
  EXPECT_EQ(retry[0].request.url, "http://b/hook");
  EXPECT_EQ(retry[0].request.body, "doomed");  // no longer held in memory: read from the store
  retry[0].done(0, "connection refused");
  engine_->Flush();
  auto errors = engine_->Peek(kProject, "errors", 10);
  ASSERT_TRUE(errors);
  ASSERT_EQ(errors->size(), 1u);
  const auto& body = (*errors)[0].body;
  EXPECT_NE(body.find("\"source_msg_id\":\"" + std::to_string(id) + "\""), std::string::npos);
  EXPECT_NE(body.find("\"body\":\"doomed\""), std::string::npos);
  EXPECT_NE(body.find("\"code\":0,\"msg\":\"connection refused\""), std::string::npos);
}

// A send that throws is a failed try: retried after retries_delay, with
// its slot freed (the limits would otherwise hold it forever).
TEST_F(EnginePushTest, ASendThatThrowsIsAFailedTryAndIsRetried) {
  MakeQueue("multicast", 1);
  transport_.ThrowNext(1);
  auto id = Post("pq", "again");
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 1u);  // a's send threw; b's went
  EXPECT_EQ(sent[0].request.url, "http://b/hook");
  sent[0].done(200, "");
  auto st = engine_->PushStatus(kProject, "pq", id);
  ASSERT_TRUE(st);
  EXPECT_EQ((*st)[0].status, "retrying");
  EXPECT_NE((*st)[0].msg.find("no memory for it"), std::string::npos);
  clock_.Advance(10'000);
  engine_->Tick();
  auto retry = transport_.Take();
  ASSERT_EQ(retry.size(), 1u);
  EXPECT_EQ(retry[0].request.url, "http://a/hook");
  retry[0].done(200, "");
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);
}

TEST_F(EnginePushTest, UnicastFailsOverAndA202WaitsForItsAcknowledgement) {
  MakeQueue("unicast", 0);
  auto id = Post("pq", "one");
  auto first = transport_.Take();
  ASSERT_EQ(first.size(), 1u);
  first[0].done(503, "");
  auto second = transport_.Take();
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].request.url, "http://b/hook");
  auto rid = HeaderOf(second[0].request, "Iron-Reservation-Id");
  second[0].done(202, "");
  EXPECT_EQ((*engine_->PushStatus(kProject, "pq", id))[1].status, "reserved");
  EXPECT_FALSE(engine_->AcknowledgePush(kProject, "pq", id, rid, "a"));
  EXPECT_TRUE(engine_->AcknowledgePush(kProject, "pq", id, rid, "b"));
  EXPECT_EQ((*engine_->PushStatus(kProject, "pq", id))[1].status, "deleted");
}

// A subscriber url stored before urls were checked when set stays usable:
// adding another subscriber is not refused for it; a new bad url is.
TEST_F(EnginePushTest, AnOldUrlThatTheCheckWouldRefuseDoesNotBlockEdits) {
  MakeQueue("multicast", 0);
  engine_->Flush();
  engine_.reset();
  store::QueueRecord rec;
  ASSERT_TRUE(store_->ForEachQueue([&](const store::QueueRecord& q, uint64_t) {
    if (q.name == "pq") rec = q;
  }));
  rec.subscribers[1].url = "http://b:99999/hook";  // as an older Kiln took it
  ASSERT_TRUE(store_->PutQueue(rec));
  Open();
  EXPECT_TRUE(engine_->AddSubscribers(kProject, "pq", {{"c", "http://c/hook", {}}}));
  auto bad = engine_->AddSubscribers(kProject, "pq", {{"d", "http://d:0/hook", {}}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
}

// Once a unicast message is delivered, the subscribers it never needed are
// not listed: "queued" there would never change.
TEST_F(EnginePushTest, ADeliveredUnicastMessageListsOnlyTheSubscribersItTried) {
  MakeQueue("unicast", 0);
  auto id = Post("pq", "one");
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(engine_->PushStatus(kProject, "pq", id)->size(), 2u);  // b may still be needed
  sent[0].done(200, "");
  auto status = engine_->PushStatus(kProject, "pq", id);
  ASSERT_TRUE(status);
  ASSERT_EQ(status->size(), 1u);
  EXPECT_EQ((*status)[0].name, "a");
  EXPECT_EQ((*status)[0].status, "deleted");
}

// A batch delete item with a reservation acknowledges that 202, as a single
// delete does: a wrong one is 403 and cancels nothing.
TEST_F(EnginePushTest, ABatchDeleteWithAReservationAcknowledgesOrIsRefused) {
  MakeQueue("multicast", 1);
  auto id = Post("pq", "ack me");
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 2u);
  auto rid = HeaderOf(sent[0].request, "Iron-Reservation-Id");
  sent[0].done(202, "");
  sent[1].done(500, "");
  auto wrong = engine_->DeleteMessages(kProject, "pq", {{id, std::string(32, '0'), ""}});
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), ErrorCode::kPermissionDenied);
  auto status = engine_->PushStatus(kProject, "pq", id);
  ASSERT_TRUE(status);
  EXPECT_EQ((*status)[0].status, "reserved");
  EXPECT_EQ((*status)[1].status, "retrying");
  ASSERT_TRUE(engine_->DeleteMessages(kProject, "pq", {{id, rid, ""}}));
  EXPECT_EQ((*engine_->PushStatus(kProject, "pq", id))[0].status, "deleted");
  EXPECT_EQ((*engine_->PushStatus(kProject, "pq", id))[1].status, "retrying");
}

TEST_F(EnginePushTest, InFlightAndUnwrittenDeliveriesAreSentAgainAfterReopen) {
  MakeQueue("multicast", 2);
  auto id = Post("pq", "again");
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 2u);
  sent[0].done(200, "");  // a plain success is not written on its own
  // "b" is still in flight when the engine goes away.
  engine_->Flush();
  Open();
  engine_->Tick();
  auto resumed = transport_.Take();
  ASSERT_EQ(resumed.size(), 2u);  // at least once: "a" gets it again
  EXPECT_EQ(HeaderOf(resumed[0].request, "Iron-Message-Id"), std::to_string(id));
  EXPECT_EQ(resumed[0].request.body, "again");
  for (auto& s : resumed) s.done(200, "");
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);
}

// A plan that cannot be read stops the start, naming its message, as
// every other record does: skipped, its message would never be delivered.
TEST_F(EnginePushTest, AnUnreadablePlanStopsTheStartAndSaysWhich) {
  MakeQueue("multicast", 1);
  auto id = Post("pq", "x");
  uint64_t qid = 0;
  ASSERT_TRUE(store_->ForEachQueue([&](const store::QueueRecord& r, uint64_t) {
    if (r.name == "pq") qid = r.qid;
  }));
  store::MessageBatch b;
  b.PutPlan(qid, id, "garbage");
  store_->Append(std::move(b));
  engine_->Flush();
  engine_.reset();
  Engine again(*store_, clock_);
  auto r = again.Recover();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("push plan of message " + std::to_string(id)),
            std::string::npos)
      << r.error().message();
}

// A plan written before plans kept expires_at takes the expiry from its
// message's state at start.
TEST_F(EnginePushTest, APlanWithoutItsExpiryTakesItFromTheMessageAtStart) {
  QueueSettings s;
  s.type = "multicast";
  s.subscribers = std::vector<store::Subscriber>{{"a", "http://a/hook", {}}};
  s.retries_delay = 86400;
  s.message_expiration = 60;
  ASSERT_TRUE(engine_->PutQueue(kProject, "old", s));
  auto id = Post("old", "x");
  transport_.Take()[0].done(500, "");  // a retry in a day
  uint64_t qid = 0;
  store::QueueRecord rec;
  ASSERT_TRUE(store_->ForEachQueue([&](const store::QueueRecord& r, uint64_t) {
    if (r.name == "old") qid = r.qid, rec = r;
  }));
  PushPlan old = NewPlan(rec, {}, clock_.NowMs());
  old.deliveries[0].status = DeliveryStatus::kRetrying;
  old.deliveries[0].next_try_at = clock_.NowMs() + 86'400'000;
  ASSERT_EQ(old.expires_at, 0);
  store::MessageBatch b;
  b.PutPlan(qid, id, EncodePlan(old));
  store_->Append(std::move(b));
  engine_->Flush();
  Open();
  clock_.Advance(60'000);
  engine_->Tick();
  EXPECT_EQ(engine_->GetQueue(kProject, "old")->size, 0u);
}

TEST_F(EnginePushTest, RecordedRetriesResumeOnTimeAfterReopen) {
  MakeQueue("multicast", 2);
  Post("pq", "retry me");
  auto sent = transport_.Take();
  sent[0].done(200, "");
  sent[1].done(500, "");  // written with "a" delivered: retry "b" in 10 s
  engine_->Flush();
  Open();
  engine_->Tick();
  EXPECT_TRUE(transport_.Take().empty());
  clock_.Advance(10'000);
  engine_->Tick();
  auto resumed = transport_.Take();
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0].request.url, "http://b/hook");
  resumed[0].done(200, "");
}

TEST_F(EnginePushTest, AnAnswerFromARemovedSubscriberIsNotTakenForAnothers) {
  MakeQueue("multicast", 1);
  auto id = Post("pq", "both");
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 2u);
  ASSERT_TRUE(engine_->RemoveSubscribers(kProject, "pq", {"a"}));
  sent[0].done(200, "");  // a's answer, after a is gone
  auto st = engine_->PushStatus(kProject, "pq", id);
  ASSERT_TRUE(st);
  ASSERT_EQ(st->size(), 1u);
  EXPECT_EQ((*st)[0].name, "b");
  EXPECT_NE((*st)[0].status, "deleted");  // b has not answered yet
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 1u);
  sent[1].done(200, "");
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);
}

TEST_F(EnginePushTest, SubscribersReplacedByAQueueUpdateAreForgottenByMessagesOnTheirWay) {
  MakeQueue("unicast", 1);
  auto id = Post("pq", "one");
  auto first = transport_.Take();
  ASSERT_EQ(first.size(), 1u);
  first[0].done(500, "");  // a failed; b is tried at once
  auto second = transport_.Take();
  ASSERT_EQ(second.size(), 1u);
  second[0].done(500, "");  // every subscriber failed: retry after 10 s
  QueueSettings s;
  s.subscribers = std::vector<store::Subscriber>{{"b", "http://b/hook", {}}};
  ASSERT_TRUE(engine_->UpdateQueue(kProject, "pq", s));
  auto st = engine_->PushStatus(kProject, "pq", id);
  ASSERT_TRUE(st);
  ASSERT_EQ(st->size(), 1u);
  EXPECT_EQ((*st)[0].name, "b");
  clock_.Advance(10'000);
  engine_->Tick();
  auto retry = transport_.Take();
  ASSERT_EQ(retry.size(), 1u);
  EXPECT_EQ(retry[0].request.url, "http://b/hook");
  retry[0].done(200, "");
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);
}

// A change of subscribers is acted on at once, not at the next retry
// (which may be a day away): a message the change completed is settled, a
// subscriber added to a waiting unicast message is tried.
TEST_F(EnginePushTest, ASubscriberChangeActsOnMessagesAtOnce) {
  MakeQueue("multicast", 3);
  Post("pq", "m");
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 2u);
  sent[0].done(200, "");
  sent[1].done(500, "");  // b: a retry in 10 s
  ASSERT_TRUE(engine_->RemoveSubscribers(kProject, "pq", {"b"}));
  engine_->Tick();  // the clock has not moved
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);

  QueueSettings s;
  s.type = "unicast";
  s.subscribers = std::vector<store::Subscriber>{{"down", "http://down/hook", {}}};
  s.retries = 3;
  s.retries_delay = 600;
  ASSERT_TRUE(engine_->PutQueue(kProject, "uq", s));
  Post("uq", "u");
  auto first = transport_.Take();
  ASSERT_EQ(first.size(), 1u);
  first[0].done(0, "connection refused");  // the round is over: 600 s to wait
  ASSERT_TRUE(engine_->AddSubscribers(kProject, "uq", {{"up", "http://up/hook", {}}}));
  engine_->Tick();
  auto next = transport_.Take();
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].request.url, "http://up/hook");
  next[0].done(200, "");
  EXPECT_EQ(engine_->GetQueue(kProject, "uq")->size, 0u);
}

// A push message expires like any other: message_expiration after its
// post, whatever retries or delay it still has; the subscribers it did not
// reach are reported in the error queue.
TEST_F(EnginePushTest, PushMessagesExpireAndTheUndeliveredAreReported) {
  QueueSettings s;
  s.type = "multicast";
  s.subscribers = std::vector<store::Subscriber>{{"a", "http://a/hook", {}}};
  s.retries = 100;
  s.retries_delay = 86400;
  s.message_expiration = 60;
  s.error_queue = "errors";
  ASSERT_TRUE(engine_->PutQueue(kProject, "ex", s));
  auto id = Post("ex", "short-lived");
  std::promise<Result<std::vector<uint64_t>>> p;
  engine_->Post(kProject, "ex", {{"delayed", 120, {}}}, [&](auto r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(p.get_future().get());
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 1u);  // the delayed one is not due
  sent[0].done(500, "");       // a retry in a day
  EXPECT_EQ(engine_->GetQueue(kProject, "ex")->size, 2u);
  // Across a restart the expiry is kept.
  Open();
  transport_.Take();
  clock_.Advance(59'999);
  engine_->Tick();
  EXPECT_EQ(engine_->GetQueue(kProject, "ex")->size, 2u);
  clock_.Advance(1);
  engine_->Tick();
  engine_->Flush();
  EXPECT_TRUE(transport_.Take().empty());  // the delayed one was never sent
  EXPECT_EQ(engine_->GetQueue(kProject, "ex")->size, 0u);
  auto errors = engine_->Peek(kProject, "errors", 10);
  ASSERT_TRUE(errors);
  ASSERT_EQ(errors->size(), 2u);
  EXPECT_NE((*errors)[0].body.find("\"source_msg_id\":\"" + std::to_string(id) + "\""),
            std::string::npos);
  EXPECT_NE((*errors)[0].body.find("expired before it was delivered"), std::string::npos);
}

TEST_F(EnginePushTest, AMessageHeldByItsHostsLimitIsSentWhenStaleEntriesAheadOfItStartNothing) {
  QueueSettings s;
  s.type = "unicast";
  s.subscribers = std::vector<store::Subscriber>{{"a", "http://a/hook", {}}};
  ASSERT_TRUE(engine_->PutQueue(kProject, "pq", s));
  // 32 in flight to host a (its limit), 33 more held on its list.
  std::vector<NewMessage> backlog(65, NewMessage{"x", 0, {}});
  std::optional<Result<std::vector<uint64_t>>> posted;
  engine_->Post(kProject, "pq", std::move(backlog), [&](auto r) { posted = std::move(r); });
  engine_->Flush();
  ASSERT_TRUE(posted && *posted);
  auto in_flight = transport_.Take();
  ASSERT_EQ(in_flight.size(), 32u);
  // The backlog is cleared: every held entry is stale now. A new message
  // waits behind them.
  ASSERT_TRUE(engine_->Clear(kProject, "pq"));
  auto id = Post("pq", "after the clear");
  EXPECT_TRUE(transport_.Take().empty());
  for (auto& d : in_flight) d.done(200, "");
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].request.body, "after the clear");
  EXPECT_EQ(HeaderOf(sent[0].request, "Iron-Message-Id"), std::to_string(id));
  sent[0].done(200, "");
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);
}

// Multicast: a message held back by a dead host's limit and by a healthy
// host's waits on both lists, so the healthy host's answers send it there
// at the healthy host's pace, not at the dead one's.
TEST_F(EnginePushTest, AMulticastMessageWaitsOnEveryHostThatHoldsItBack) {
  QueueSettings s;
  s.type = "multicast";
  s.subscribers = std::vector<store::Subscriber>{{"dead", "http://dead/hook", {}},
                                                 {"live", "http://live/hook", {}}};
  ASSERT_TRUE(engine_->PutQueue(kProject, "pq", s));
  std::vector<NewMessage> burst(40, NewMessage{"x", 0, {}});
  std::optional<Result<std::vector<uint64_t>>> posted;
  engine_->Post(kProject, "pq", std::move(burst), [&](auto r) { posted = std::move(r); });
  engine_->Flush();
  ASSERT_TRUE(posted && *posted);
  auto first = transport_.Take();
  ASSERT_EQ(first.size(), 64u);  // 32 to each host, its limit
  for (auto& d : first)
    if (d.request.url == "http://live/hook") d.done(200, "");  // the dead host never answers
  auto more = transport_.Take();
  ASSERT_EQ(more.size(), 8u);
  for (auto& d : more) EXPECT_EQ(d.request.url, "http://live/hook");
}

// A project whose subscribers are on many slow hosts takes at most half of
// the deliveries under way (1,024): another project's message still goes
// out at once, and the first project's wait their turn.
TEST_F(EnginePushTest, OneProjectsManySlowHostsDoNotHoldAnotherProjectsDeliveriesBack) {
  QueueSettings s;
  s.type = "multicast";
  s.subscribers = std::vector<store::Subscriber>{};
  for (int i = 0; i < 40; ++i)  // 40 hosts x 32 each would be 1,280
    s.subscribers->push_back(
        {"s" + std::to_string(i), "http://h" + std::to_string(i) + "/hook", {}});
  ASSERT_TRUE(engine_->PutQueue(kProject, "wide", s));
  std::vector<NewMessage> backlog(32, NewMessage{"x", 0, {}});
  std::optional<Result<std::vector<uint64_t>>> posted;
  engine_->Post(kProject, "wide", std::move(backlog), [&](auto r) { posted = std::move(r); });
  engine_->Flush();
  ASSERT_TRUE(posted && *posted);
  auto held = transport_.Take();
  EXPECT_EQ(held.size(), 512u);

  constexpr char kOther[] = "76543210fedcba9876543210";
  QueueSettings one;
  one.type = "unicast";
  one.subscribers = std::vector<store::Subscriber>{{"a", "http://other/hook", {}}};
  ASSERT_TRUE(engine_->PutQueue(kOther, "narrow", one));
  std::optional<Result<std::vector<uint64_t>>> other;
  engine_->Post(kOther, "narrow", {NewMessage{"mine", 0, {}}},
                [&](auto r) { other = std::move(r); });
  engine_->Flush();
  ASSERT_TRUE(other && *other);
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].request.body, "mine");
  sent[0].done(200, "");

  // Answers free the first project's room: the rest go out as it frees,
  // restarted by the answers (no polling).
  for (size_t i = 0; i < 100; ++i) held[i].done(200, "");
  auto next = transport_.Take();
  EXPECT_EQ(next.size(), 100u);
  // Every delivery goes out in the end, none twice.
  size_t sent_in_all = held.size() + next.size();
  std::vector<FakeTransport::Sent> flight(held.begin() + 100, held.end());
  for (auto& n : next) flight.push_back(std::move(n));
  while (!flight.empty()) {
    for (auto& f : flight) f.done(200, "");
    flight = transport_.Take();
    sent_in_all += flight.size();
  }
  EXPECT_EQ(sent_in_all, 32u * 40u);
  EXPECT_EQ(engine_->GetQueue(kProject, "wide")->size, 0u);
}

// Two projects with deep backlogs to slow hosts take every slot (512 each):
// a third's message waits its turn and gets the next free slot, rather than
// each answer handing its slot back to its own project. Nothing is polled.
TEST_F(EnginePushTest, WhenEverySlotIsTakenProjectsGetTheFreedOnesInTurn) {
  auto wide = [&](const std::string& project) {
    QueueSettings s;
    s.type = "multicast";
    s.subscribers = std::vector<store::Subscriber>{};
    for (int i = 0; i < 20; ++i)  // 20 hosts x 32 = 640, past the project's 512
      s.subscribers->push_back(
          {"s" + std::to_string(i), "http://" + project + "-h" + std::to_string(i) + "/hook", {}});
    ASSERT_TRUE(engine_->PutQueue(project, "wide", s));
    std::vector<NewMessage> backlog(40, NewMessage{"x", 0, {}});
    std::optional<Result<std::vector<uint64_t>>> posted;
    engine_->Post(project, "wide", std::move(backlog), [&](auto r) { posted = std::move(r); });
    engine_->Flush();
    ASSERT_TRUE(posted && *posted);
  };
  constexpr char kB[] = "76543210fedcba9876543210", kC[] = "fedcba9876543210fedcba98";
  wide(kProject);
  wide(kB);
  auto held = transport_.Take();
  ASSERT_EQ(held.size(), 1024u);  // every slot
  QueueSettings one;
  one.type = "unicast";
  one.subscribers = std::vector<store::Subscriber>{{"a", "http://c/hook", {}}};
  ASSERT_TRUE(engine_->PutQueue(kC, "narrow", one));
  std::optional<Result<std::vector<uint64_t>>> posted;
  engine_->Post(kC, "narrow", {NewMessage{"mine", 0, {}}}, [&](auto r) { posted = std::move(r); });
  engine_->Flush();
  ASSERT_TRUE(posted && *posted);
  EXPECT_TRUE(transport_.Take().empty());  // no slot
  clock_.Advance(1000);
  engine_->Tick();
  EXPECT_TRUE(transport_.Take().empty());  // and no polling for one
  held[0].done(200, "");  // the first project's answer frees a slot: the third's turn
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].request.body, "mine");
  sent[0].done(200, "");  // then back to the busy ones
  EXPECT_EQ(transport_.Take().size(), 1u);
}

TEST_F(EnginePushTest, AnAcknowledgementThatArrivesBeforeIts202IsRead) {
  MakeQueue("multicast", 1);
  auto id = Post("pq", "quick");
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 2u);
  std::string rid = HeaderOf(sent[0].request, "Iron-Reservation-Id");
  EXPECT_FALSE(engine_->AcknowledgePush(kProject, "pq", id, FormatReservationId(id, 2), "a"));
  ASSERT_TRUE(engine_->AcknowledgePush(kProject, "pq", id, rid, "a"));
  sent[0].done(202, "");  // read after the acknowledgement: a stays delivered
  auto st = engine_->PushStatus(kProject, "pq", id);
  ASSERT_TRUE(st);
  ASSERT_EQ(st->size(), 2u);
  EXPECT_EQ((*st)[0].status, "deleted");
  // b acknowledges before its answer too, which then settles nothing but
  // is still shown as its try.
  ASSERT_TRUE(engine_->AcknowledgePush(kProject, "pq", id,
                                       HeaderOf(sent[1].request, "Iron-Reservation-Id"), "b"));
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);
  sent[1].done(500, "");
  st = engine_->PushStatus(kProject, "pq", id);
  ASSERT_TRUE(st);
  for (const auto& s : *st) EXPECT_EQ(s.tries, 1) << s.name;
  EXPECT_EQ((*st)[0].status_code, 202);
  EXPECT_EQ((*st)[1].status_code, 500);
  EXPECT_EQ((*st)[1].status, "deleted");
  clock_.Advance(120'000);  // past the message timeout: nothing is sent again
  engine_->Tick();
  EXPECT_TRUE(transport_.Take().empty());
}

TEST_F(EnginePushTest, APushQueueAsDeadLetterQueueDeliversWhatItGets) {
  QueueSettings dlq;
  dlq.type = "multicast";
  dlq.subscribers = std::vector<store::Subscriber>{{"pager", "http://pager/hook", {}}};
  ASSERT_TRUE(engine_->PutQueue(kProject, "dead", dlq));
  QueueSettings src;
  src.dead_letter_queue = "dead";
  src.max_reservations = 1;
  ASSERT_TRUE(engine_->PutQueue(kProject, "work", src));
  auto id = Post("work", "poison");
  ReserveOptions o;
  o.timeout = 30;
  ASSERT_EQ(engine_->Reserve(kProject, "work", o, nullptr)->size(), 1u);
  clock_.Advance(30'000);
  EXPECT_TRUE(engine_->Reserve(kProject, "work", o, nullptr)->empty());  // moves it
  engine_->Flush();
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].request.url, "http://pager/hook");
  EXPECT_EQ(sent[0].request.body, "poison");
  EXPECT_EQ(HeaderOf(sent[0].request, "Iron-Message-Id"), std::to_string(id));
  EXPECT_EQ(engine_->GetQueue(kProject, "dead")->size, 1u);
  sent[0].done(200, "");
  EXPECT_EQ(engine_->GetQueue(kProject, "dead")->size, 0u);
  EXPECT_EQ(engine_->GetQueue(kProject, "work")->size, 0u);
  Open();  // delivered: nothing comes back after a restart
  EXPECT_EQ(engine_->GetQueue(kProject, "dead")->size, 0u);
  EXPECT_TRUE(transport_.Take().empty());
}

TEST_F(EnginePushTest, MessagesOnTheirWayGoToTheSubscribersThatReplaceTheirOwn) {
  QueueSettings s;
  s.type = "multicast";
  s.retries = 3;
  s.retries_delay = 60;
  s.subscribers = std::vector<store::Subscriber>{{"old", "http://old/hook", {}}};
  ASSERT_TRUE(engine_->PutQueue(kProject, "pq", s));
  auto id = Post("pq", "keep me");
  auto first = transport_.Take();
  ASSERT_EQ(first.size(), 1u);
  first[0].done(0, "connection refused");  // the old endpoint is down: a retry in 60 s
  ASSERT_TRUE(engine_->ReplaceSubscribers(kProject, "pq", {{"new", "http://new/hook", {}}}));
  engine_->Tick();  // sent now, not after the old one's retry delay, nor dropped
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].request.url, "http://new/hook");
  EXPECT_EQ(sent[0].request.body, "keep me");
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 1u);
  EXPECT_EQ(HeaderOf(sent[0].request, "Iron-Message-Id"), std::to_string(id));
  sent[0].done(200, "");
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);
}

TEST_F(EnginePushTest, TheErrorReportOfAMessageAtTheSizeLimitIsPostedAndRemovesIt) {
  MakeQueue("multicast", 0);
  // JSON escapes each control byte as six: the report is far past 64 KB.
  std::string body(64 * 1024, '\x01');
  auto id = Post("pq", body);
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 2u);
  sent[0].done(200, "");
  sent[1].done(500, "");
  engine_->Flush();
  auto errors = engine_->Peek(kProject, "errors", 10);
  ASSERT_TRUE(errors);
  ASSERT_EQ(errors->size(), 1u);
  EXPECT_GT((*errors)[0].body.size(), 6 * body.size());
  EXPECT_NE((*errors)[0].body.find("\"source_msg_id\":\"" + std::to_string(id) + "\""),
            std::string::npos);
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);
  Open();  // reported and removed in one write: neither comes back
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);
  EXPECT_EQ(engine_->GetQueue(kProject, "errors")->size, 1u);
  EXPECT_TRUE(transport_.Take().empty());
}

// Two push queues that are each other's error queue: each report holds the
// last one, escaped again. The hop limit ends the loop, and a report past
// 1 MiB leaves the body out, so nothing grows without end.
TEST_F(EnginePushTest, ErrorQueuesReportingToEachOtherStopAndStayBounded) {
  for (auto [q, other] : {std::pair{"ping", "pong"}, std::pair{"pong", "ping"}}) {
    QueueSettings s;
    s.type = "multicast";
    s.subscribers = std::vector<store::Subscriber>{{"x", "http://x/hook", {}}};
    s.retries = 0;
    s.error_queue = other;
    ASSERT_TRUE(engine_->PutQueue(kProject, q, s));
  }
  Post("ping", std::string(60 * 1024, '"'));  // every round doubles the backslashes
  size_t rounds = 0, largest = 0;
  bool omitted = false;
  for (;;) {
    engine_->Flush();
    auto sent = transport_.Take();
    if (sent.empty()) break;
    ASSERT_LT(++rounds, 50u) << "the loop did not end";
    for (auto& d : sent) {
      largest = std::max(largest, d.request.body.size());
      omitted = omitted || d.request.body.find("\"body_omitted\":true") != std::string::npos;
      d.done(500, "");
    }
  }
  EXPECT_EQ(rounds, static_cast<size_t>(kMaxHops) + 1);  // the post and ten reports
  EXPECT_TRUE(omitted);
  EXPECT_LE(largest, size_t{1} << 20);
  EXPECT_EQ(engine_->GetQueue(kProject, "ping")->size + engine_->GetQueue(kProject, "pong")->size,
            0u);  // the last one, past the hop limit, is dropped without a report
}

// A report refused for good (its error queue would be one queue past the
// project's limit) is dropped with its message, not retried forever.
TEST(EnginePushLimitTest, AReportRefusedForGoodIsDroppedWithItsMessage) {
  testing::TempDir dir;
  FakeClock clock;
  FakeTransport transport;
  auto store = std::move(*store::rocks::Open({dir.path()}));
  Engine engine(*store, clock, EngineOptions{.max_queues_per_project = 1});
  ASSERT_TRUE(engine.Recover());
  engine.SetPushTransport(&transport, "http://kiln:1");
  QueueSettings s;
  s.type = "multicast";
  s.subscribers = std::vector<store::Subscriber>{{"x", "http://x/hook", {}}};
  s.retries = 0;
  s.error_queue = "errors";  // cannot be made: the project has its one queue
  ASSERT_TRUE(engine.PutQueue(kProject, "pq", s));
  std::promise<Result<std::vector<uint64_t>>> p;
  engine.Post(kProject, "pq", {{"failing", 0}}, [&](auto r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(p.get_future().get());
  engine.Flush();
  auto sent = transport.Take();
  ASSERT_EQ(sent.size(), 1u);
  sent[0].done(500, "");
  engine.Flush();
  EXPECT_EQ(engine.GetQueue(kProject, "pq")->size, 0u);
  EXPECT_FALSE(engine.GetQueue(kProject, "errors"));
  clock.Advance(60'000);  // no report comes back to be tried again
  engine.Tick();
  engine.Flush();
  EXPECT_FALSE(engine.GetQueue(kProject, "errors"));
  Engine again(*store, clock, EngineOptions{.max_queues_per_project = 1});
  ASSERT_TRUE(again.Recover());
  again.SetPushTransport(&transport, "http://kiln:1");
  EXPECT_EQ(again.GetQueue(kProject, "pq")->size, 0u);  // gone from the store too
  EXPECT_TRUE(transport.Take().empty());
}

// A push queue takes any bytes; the error report (JSON, in a pull queue)
// carries a body that is not UTF-8 as base64, whole.
TEST_F(EnginePushTest, TheErrorReportOfABinaryBodyCarriesItAsBase64) {
  MakeQueue("multicast", 0);
  auto id = Post("pq", std::string("\xff\xfe\x41", 3));
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].request.body, std::string("\xff\xfe\x41", 3));
  sent[0].done(500, "");
  sent[1].done(500, "");
  engine_->Flush();
  auto errors = engine_->Peek(kProject, "errors", 10);
  ASSERT_TRUE(errors);
  ASSERT_EQ(errors->size(), 1u);
  EXPECT_NE((*errors)[0].body.find("\"body_base64\":\"//5B\""), std::string::npos)
      << (*errors)[0].body;
  EXPECT_NE((*errors)[0].body.find(std::to_string(id)), std::string::npos);
  // A pull queue refuses such a body, and is not made for it.
  std::promise<Result<std::vector<uint64_t>>> p;
  engine_->Post(kProject, "pull", {{std::string("\xff", 1), 0, {}}},
                [&](auto r) { p.set_value(std::move(r)); });
  auto refused = p.get_future().get();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(engine_->GetQueue(kProject, "pull"));
}

// A push queue cannot name itself as a subscriber (each delivery would post
// another message); a message's hops go with its deliveries, so that the
// transport passes them on.
TEST_F(EnginePushTest, NoSubscriberIntoItsOwnQueueAndDeliveriesCarryTheirHops) {
  QueueSettings s;
  s.type = "multicast";
  s.subscribers = std::vector<store::Subscriber>{{"self", "ironmq:///pq", {}}};
  auto r = engine_->PutQueue(kProject, "pq", s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  s.subscribers = std::vector<store::Subscriber>{{"other", "ironmq:///elsewhere", {}},
                                                 {"task", "ironworker:///resize", {}}};
  ASSERT_TRUE(engine_->PutQueue(kProject, "pq", s));
  s.subscribers = std::vector<store::Subscriber>{{"bad", "ironworker:///a/b", {}}};
  EXPECT_FALSE(engine_->PutQueue(kProject, "pq2", s));
  std::promise<Result<std::vector<uint64_t>>> p;
  engine_->Post(kProject, "pq", {{"m", 0, {}, 3}}, [&](auto r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(p.get_future().get());
  engine_->Flush();
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].request.hops, 3);
  EXPECT_EQ(sent[1].request.url, "ironworker:///resize");
  for (auto& x : sent) x.done(201, "");
}

// Each delivery of a multicast queue that may make a message (ironmq://, a
// URL naming a queue) is a copy, and so is the error report: every
// delivery carries the message's spread times that width, kept across a
// restart. A post whose spread is past kMaxSpread is refused.
TEST_F(EnginePushTest, DeliveriesCarryTheirSpreadAndTooManyCopiesAreRefused) {
  QueueSettings s;
  s.type = "multicast";
  s.subscribers =
      std::vector<store::Subscriber>{{"kiln", "http://kiln-b/3/projects/p/queues/in/webhook", {}},
                                     {"hook", "http://b/hook", {}},  // not a copy
                                     {"task", "ironworker:///resize", {}},
                                     {"fan", "ironmq:///elsewhere", {}}};
  s.retries = 1;
  s.retries_delay = 10;
  s.error_queue = "errors";  // the report is a copy too: a width of 3
  ASSERT_TRUE(engine_->PutQueue(kProject, "pq", s));
  std::promise<Result<std::vector<uint64_t>>> p;
  engine_->Post(kProject, "pq", {{"m", 0, {}, 2, 7}}, [&](auto r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(p.get_future().get());
  engine_->Flush();
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 4u);
  for (const auto& d : sent) {
    EXPECT_EQ(d.request.spread, 21) << d.request.url;
    EXPECT_EQ(HeaderOf(d.request, kSpreadHeader), "21");
  }
  for (size_t i = 1; i < sent.size(); ++i) sent[i].done(200, "");
  sent[0].done(500, "");  // written with the others delivered: retried in 10 s
  engine_->Flush();
  Open();  // the plan keeps the message's spread
  clock_.Advance(10'000);
  engine_->Tick();
  auto again = transport_.Take();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].request.spread, 21);
  again[0].done(200, "");

  std::promise<Result<std::vector<uint64_t>>> refused;
  engine_->Post(kProject, "pq", {{"m", 0, {}, 0, kMaxSpread + 1}},
                [&](auto r) { refused.set_value(std::move(r)); });
  auto r = refused.get_future().get();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
}

// Alerts that fire at once are copies of what made them fire: each notice
// gets the post's spread times their number.
TEST_F(EnginePushTest, AlertNoticesFiredTogetherAreCopies) {
  QueueSettings h;
  h.type = "multicast";
  h.subscribers = std::vector<store::Subscriber>{{"fan", "ironmq:///elsewhere", {}}};
  ASSERT_TRUE(engine_->PutQueue(kProject, "alerted", h));
  QueueSettings s;
  store::Alert fixed{"", "fixed", "asc", 1, "alerted", 0};
  store::Alert progressive{"", "progressive", "asc", 1, "alerted", 0};
  s.alerts = std::vector<store::Alert>{fixed, progressive};
  ASSERT_TRUE(engine_->PutQueue(kProject, "watched", s));
  std::promise<Result<std::vector<uint64_t>>> p;
  engine_->Post(kProject, "watched", {{"m", 0, {}, 0, 5}},
                [&](auto r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(p.get_future().get());
  // The notices are posted once the post's write is done, after its answer.
  std::vector<FakeTransport::Sent> sent;
  for (int i = 0; i < 5000 && sent.size() < 2; ++i) {
    engine_->Flush();
    for (auto& x : transport_.Take()) sent.push_back(std::move(x));
    if (sent.size() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(sent.size(), 2u);  // the two notices, each delivered once
  for (auto& d : sent) {
    EXPECT_EQ(d.request.spread, 10);
    d.done(201, "");
  }
}

// The pull-queue form of an acknowledgement (a delete with the delivery's
// reservation id, no subscriber name) acknowledges that one delivery; the
// others go on, and a reservation no delivery has is refused.
TEST_F(EnginePushTest, ADeleteWithAReservationAcknowledgesOnlyThatDelivery) {
  MakeQueue("multicast", 1);
  auto id = Post("pq", "one");
  auto sent = transport_.Take();
  ASSERT_EQ(sent.size(), 2u);
  auto rid = HeaderOf(sent[0].request, "Iron-Reservation-Id");
  sent[0].done(202, "");
  sent[1].done(503, "");
  auto stale = engine_->DeleteMessage(kProject, "pq", {id, FormatReservationId(id, 2), ""});
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code(), ErrorCode::kPermissionDenied);
  ASSERT_TRUE(engine_->DeleteMessage(kProject, "pq", {id, rid, ""}));
  auto st = engine_->PushStatus(kProject, "pq", id);
  ASSERT_TRUE(st);
  EXPECT_EQ((*st)[0].status, "deleted");
  EXPECT_EQ((*st)[1].status, "retrying");
  clock_.Advance(10'000);
  engine_->Tick();
  auto again = transport_.Take();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].request.url, "http://b/hook");
  again[0].done(200, "");
  EXPECT_EQ(engine_->GetQueue(kProject, "pq")->size, 0u);
}

// A post whose write overlaps a change of the queue's subscribers goes to
// the new ones: its plan was made from the old list before the change.
TEST(EnginePushRaceTest, APostWrittenWhileTheSubscribersChangeGoesToTheNewOnes) {
  testing::TempDir dir;
  FakeClock clock;
  FakeTransport transport;
  auto real = std::move(*store::rocks::Open({dir.path()}));
  testing::LateCompletions store(*real);
  Engine engine(store, clock);
  ASSERT_TRUE(engine.Recover());
  engine.SetPushTransport(&transport, "http://kiln:1");
  QueueSettings s;
  s.type = "multicast";
  s.subscribers = std::vector<store::Subscriber>{{"a", "http://a/hook", {}}};
  ASSERT_TRUE(engine.PutQueue(kProject, "pq", s));
  store.hold = true;
  std::optional<Result<std::vector<uint64_t>>> posted;
  engine.Post(kProject, "pq", {{"m", 0, {}}}, [&](auto r) { posted = std::move(r); });
  ASSERT_EQ(store.held.size(), 1u);
  store.hold = false;
  ASSERT_TRUE(engine.ReplaceSubscribers(kProject, "pq", {{"c", "http://c/hook", {}}}));
  for (auto& f : store.held) f();
  ASSERT_TRUE(posted && *posted);
  engine.Tick();
  auto sent = transport.Take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].request.url, "http://c/hook");
  sent[0].done(200, "");
  EXPECT_EQ(engine.GetQueue(kProject, "pq")->size, 0u);
  engine.Flush();
}

// At shutdown, once pushes are stopped, nothing reaches the transport (it
// is destroyed next), not even from a post whose write completes after;
// the message is delivered after the restart.
TEST(EnginePushRaceTest, AfterStopPushesNothingIsSentAndTheMessageWaitsForTheRestart) {
  testing::TempDir dir;
  FakeClock clock;
  FakeTransport transport;
  {
    auto real = std::move(*store::rocks::Open({dir.path()}));
    testing::LateCompletions store(*real);
    Engine engine(store, clock);
    ASSERT_TRUE(engine.Recover());
    engine.SetPushTransport(&transport, "http://kiln:1");
    QueueSettings s;
    s.type = "multicast";
    s.subscribers = std::vector<store::Subscriber>{{"a", "http://a/hook", {}}};
    ASSERT_TRUE(engine.PutQueue(kProject, "pq", s));
    store.hold = true;
    std::optional<Result<std::vector<uint64_t>>> posted;
    engine.Post(kProject, "pq", {{"late", 0, {}}}, [&](auto r) { posted = std::move(r); });
    ASSERT_EQ(store.held.size(), 1u);
    store.hold = false;
    engine.StopPushes();
    for (auto& f : store.held) f();
    ASSERT_TRUE(posted && *posted);  // the client heard of its post
    clock.Advance(60'000);
    engine.Tick();
    EXPECT_TRUE(transport.Take().empty());
  }
  auto store = std::move(*store::rocks::Open({dir.path()}));
  Engine engine(*store, clock);
  ASSERT_TRUE(engine.Recover());
  engine.SetPushTransport(&transport, "http://kiln:1");
  engine.Tick();
  auto sent = transport.Take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].request.body, "late");
  sent[0].done(200, "");
  engine.Flush();
}

// A store whose next `fail` Commits fail, as a full disk makes them.
class FailingCommits : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  int fail = 0;
  void Commit(store::MessageBatch b, Done d, Writer w) override {
    if (fail > 0 && fail--) return d(Fail(Error::Internal("store: IO error: No space left")));
    real_.Commit(std::move(b), std::move(d), w);
  }
  bool fail_bodies = false;
  Result<std::string> GetBody(uint64_t q, uint64_t id) override {
    if (fail_bodies) return Fail(Error::Internal("store: Corruption: block checksum mismatch"));
    return real_.GetBody(q, id);
  }
};

// An engine over a store that fails when told to, with a multicast queue
// "pq" (one subscriber, no retries) that reports to "errors".
struct FailingStoreRig {
  FailingStoreRig() {
    EXPECT_TRUE(engine.Recover());
    engine.SetPushTransport(&transport, "http://kiln:1");
    QueueSettings s;
    s.type = "multicast";
    s.retries = 0;
    s.error_queue = "errors";
    s.subscribers = std::vector<store::Subscriber>{{"a", "http://a/hook", {}}};
    EXPECT_TRUE(engine.PutQueue(kProject, "pq", s));
  }
  // Posts `body` to "pq"; its delivery is in transport.Take() afterwards.
  uint64_t Post(const std::string& body) {
    std::promise<Result<std::vector<uint64_t>>> p;
    engine.Post(kProject, "pq", {{body, 0, {}}}, [&](auto r) { p.set_value(std::move(r)); });
    auto ids = p.get_future().get();
    EXPECT_TRUE(ids);
    engine.Flush();  // its deliveries start after the post's answer
    return ids ? ids->at(0) : 0;
  }

  testing::TempDir dir;
  FakeClock clock;
  FakeTransport transport;
  std::unique_ptr<store::Store> real = std::move(*store::rocks::Open({dir.path()}));
  FailingCommits store{*real};
  Engine engine{store, clock};
};

// A message whose body cannot be read is reported without it, said so
// (`body_omitted`), not as a message with an empty body.
TEST(EnginePushStoreFailureTest, AReportOfAnUnreadableBodyOmitsIt) {
  FailingStoreRig rig;
  rig.Post("lost");
  auto sent = rig.transport.Take();
  ASSERT_EQ(sent.size(), 1u);
  rig.store.fail_bodies = true;
  sent[0].done(500, "");
  rig.engine.Flush();
  rig.store.fail_bodies = false;
  auto errors = rig.engine.Peek(kProject, "errors", 10);
  ASSERT_TRUE(errors);
  ASSERT_EQ(errors->size(), 1u);
  EXPECT_NE((*errors)[0].body.find("\"body_omitted\":true"), std::string::npos)
      << (*errors)[0].body;
}

// An error report whose post fails is posted again a little later, without
// a restart: the message is reported once and removed.
TEST(EnginePushStoreFailureTest, AnErrorReportThatCouldNotBePostedIsPostedAgain) {
  FailingStoreRig rig;
  Engine& engine = rig.engine;
  FakeClock& clock = rig.clock;
  auto& store = rig.store;
  auto id = rig.Post("doomed");
  auto sent = rig.transport.Take();
  ASSERT_EQ(sent.size(), 1u);
  store.fail = 1;  // the report's post
  sent[0].done(500, "");
  engine.Flush();
  EXPECT_FALSE(engine.GetQueue(kProject, "errors") && engine.GetQueue(kProject, "errors")->size);
  clock.Advance(10'000);
  engine.Tick();
  engine.Flush();
  auto errors = engine.Peek(kProject, "errors", 10);
  ASSERT_TRUE(errors);
  ASSERT_EQ(errors->size(), 1u);
  EXPECT_NE((*errors)[0].body.find("\"source_msg_id\":\"" + std::to_string(id) + "\""),
            std::string::npos);
  EXPECT_NE((*errors)[0].body.find("doomed"), std::string::npos);
  EXPECT_EQ(engine.GetQueue(kProject, "pq")->size, 0u);
  clock.Advance(60'000);
  engine.Tick();
  engine.Flush();
  EXPECT_EQ(engine.GetQueue(kProject, "errors")->size, 1u);  // once
}

}  // namespace
}  // namespace kiln::mq
