// http::Resolver with a lookup the tests control: one lookup per name while
// it runs, a hanging name holds no other, answers and failures kept for
// their times, Close, and the cap on lookups at once.
#include "http/resolver.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <memory>

namespace kiln::http {
namespace {

// A lookup that answers "10.0.0.1" at once for every name but "slow", which
// waits until Release (or the gate goes away with the test).
struct Gate {
  std::promise<void> open;
  std::shared_future<void> opened = open.get_future().share();
  std::atomic<int> calls{0}, slow_calls{0};
  void Release() { open.set_value(); }
};

ResolverOptions WithGate(const std::shared_ptr<Gate>& gate) {
  ResolverOptions o;
  o.lookup = [gate](const std::string& host, const std::string&) -> Result<Addresses> {
    ++gate->calls;
    if (host == "slow") {
      ++gate->slow_calls;
      gate->opened.wait();
    }
    if (host == "nowhere") return Fail(Error::Unavailable("cannot resolve nowhere"));
    return Addresses{"10.0.0.1"};
  };
  return o;
}

Result<Addresses> ResolveNow(Resolver& r, const std::string& host) {
  std::promise<Result<Addresses>> p;
  r.Resolve(host, "80", [&](Result<Addresses> a) { p.set_value(std::move(a)); });
  return p.get_future().get();
}

TEST(ResolverTest, AHangingNameHoldsOnlyItsOwnRequestsAndIsLookedUpOnce) {
  auto gate = std::make_shared<Gate>();
  Resolver r(WithGate(gate));
  std::vector<std::promise<Result<Addresses>>> slow(5);
  for (auto& p : slow) r.Resolve("slow", "80", [&p](Result<Addresses> a) { p.set_value(a); });
  auto fast = ResolveNow(r, "fast");  // answered while "slow" hangs
  ASSERT_TRUE(fast);
  EXPECT_EQ(*fast, Addresses{"10.0.0.1"});
  gate->Release();
  for (auto& p : slow) {
    auto a = p.get_future().get();
    ASSERT_TRUE(a);
    EXPECT_EQ(*a, Addresses{"10.0.0.1"});
  }
  EXPECT_EQ(gate->slow_calls.load(), 1);
}

TEST(ResolverTest, AnswersAreKeptForTheirTtlAndFailuresForTheirs) {
  auto gate = std::make_shared<Gate>();
  auto o = WithGate(gate);
  o.ttl = std::chrono::hours(1);
  o.failure_ttl = std::chrono::milliseconds(0);
  Resolver r(o);
  ASSERT_TRUE(ResolveNow(r, "fast"));
  ASSERT_TRUE(ResolveNow(r, "fast"));
  EXPECT_EQ(gate->calls.load(), 1);  // the second from the cache
  auto no = ResolveNow(r, "nowhere");
  ASSERT_FALSE(no);
  EXPECT_EQ(no.error().message(), "cannot resolve nowhere");
  ASSERT_FALSE(ResolveNow(r, "nowhere"));
  EXPECT_EQ(gate->calls.load(), 3);  // a failure kept for 0 ms: asked again

  o.failure_ttl = std::chrono::hours(1);
  Resolver kept(o);
  ASSERT_FALSE(ResolveNow(kept, "nowhere"));
  ASSERT_FALSE(ResolveNow(kept, "nowhere"));
  EXPECT_EQ(gate->calls.load(), 4);
}

TEST(ResolverTest, PastMaxLookupsALookupFailsAtOnce) {
  auto gate = std::make_shared<Gate>();
  auto o = WithGate(gate);
  o.max_lookups = 1;
  Resolver r(o);
  std::promise<Result<Addresses>> slow;
  r.Resolve("slow", "80", [&](Result<Addresses> a) { slow.set_value(a); });
  auto other = ResolveNow(r, "other");
  ASSERT_FALSE(other);
  EXPECT_NE(other.error().message().find("too many name lookups"), std::string::npos);
  gate->Release();
  ASSERT_TRUE(slow.get_future().get());
  ASSERT_TRUE(ResolveNow(r, "other"));  // room again
}

// One site's names (hanging, say) take at most max_lookups_per_site of the
// lookups at once: other sites' names are still looked up.
TEST(ResolverTest, OneSitesHangingNamesDoNotTakeEveryLookup) {
  auto gate = std::make_shared<Gate>();
  auto o = WithGate(gate);
  o.max_lookups_per_site = 2;
  o.lookup = [gate](const std::string& host, const std::string&) -> Result<Addresses> {
    if (host.find("hangs.example") != std::string::npos) gate->opened.wait();
    return Addresses{"10.0.0.2"};
  };
  Resolver r(o);
  std::vector<std::promise<Result<Addresses>>> slow(2);
  for (size_t i = 0; i < slow.size(); ++i)
    r.Resolve("h" + std::to_string(i) + ".hangs.example", "80",
              [&slow, i](Result<Addresses> a) { slow[i].set_value(a); });
  auto third = ResolveNow(r, "h9.hangs.example");
  ASSERT_FALSE(third);
  EXPECT_NE(third.error().message().find("too many name lookups"), std::string::npos);
  EXPECT_TRUE(ResolveNow(r, "fine.other.example"));
  // A site is a registrable domain (Public Suffix List), not the last two
  // labels: one owner under co.uk does not hold back another.
  std::vector<std::promise<Result<Addresses>>> uk(2);
  for (size_t i = 0; i < uk.size(); ++i)
    r.Resolve("h" + std::to_string(i) + ".hangs.example.co.uk", "80",
              [&uk, i](Result<Addresses> a) { uk[i].set_value(a); });
  EXPECT_FALSE(ResolveNow(r, "h9.HANGS.example.co.uk"));
  EXPECT_TRUE(ResolveNow(r, "www.other.co.uk"));
  gate->Release();
  for (auto& p : uk) EXPECT_TRUE(p.get_future().get());
  for (auto& p : slow) EXPECT_TRUE(p.get_future().get());
  EXPECT_TRUE(ResolveNow(r, "h9.hangs.example"));  // room again
}

TEST(ResolverTest, AfterCloseALookupUnderWayCallsNoOne) {
  auto gate = std::make_shared<Gate>();
  std::atomic<bool> called{false};
  {
    Resolver r(WithGate(gate));
    r.Resolve("slow", "80", [&](Result<Addresses>) { called = true; });
    r.Close();
    auto after = ResolveNow(r, "fast");
    ASSERT_FALSE(after);
    EXPECT_NE(after.error().message().find("stopping"), std::string::npos);
  }
  gate->Release();
  // The lookup's thread ends on its own; it finds no one waiting.
  for (int i = 0; i < 200 && gate->calls.load() < 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(called.load());
}

TEST(ResolverTest, SystemLookupResolvesLocalhostAndRejectsNonsense) {
  auto a = SystemLookup("localhost", "80");
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_FALSE(a->empty());
  EXPECT_FALSE(SystemLookup("no such host!", "80"));
}

}  // namespace
}  // namespace kiln::http
