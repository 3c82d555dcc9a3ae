#include "access/access.h"

#include <gtest/gtest.h>

#include <functional>

#include "store/rocks/rocks_store.h"
#include "tests/support/forwarding_store.h"
#include "tests/support/temp_dir.h"

namespace kiln::access {
namespace {

// Runs `during_lookup` after a token lookup has read the store and before
// Access sees the answer: what another thread may do in between.
class SlowLookups : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  std::function<void()> during_lookup;
  Result<store::TokenRecord> GetTokenByHash(const std::string& hash) override {
    auto r = ForwardingStore::GetTokenByHash(hash);
    if (during_lookup) std::exchange(during_lookup, nullptr)();
    return r;
  }
};

class AccessTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<store::Store> real_ = std::move(*store::rocks::Open({dir_.path()}));
  SlowLookups store_{*real_};
  Access access_{store_, clock_};
};

TEST_F(AccessTest, ATokenReachesItsProjectUntilRevoked) {
  auto project = access_.CreateProject("team");
  ASSERT_TRUE(project);
  auto token = access_.CreateToken(project->id, "ci");
  ASSERT_TRUE(token);
  auto p = access_.Authenticate(token->secret);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->project_id, project->id);
  EXPECT_FALSE(p->admin);
  EXPECT_TRUE(access_.Authenticate(token->secret));  // from the cache
  EXPECT_EQ(access_.Authenticate(token->secret + "x").error().code(), ErrorCode::kUnauthenticated);
  ASSERT_TRUE(access_.RevokeToken(token->record.id));
  EXPECT_EQ(access_.Authenticate(token->secret).error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(access_.RevokeToken(token->record.id).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(access_.CreateToken("0123456789abcdef01234567", "x").error().code(),
            ErrorCode::kNotFound);
}

// A revoke that lands while a request is looking its token up: that request
// may pass (it was valid when it came), but the token is not remembered, so
// the next request with it is refused.
TEST_F(AccessTest, ALookupThatOverlapsARevokeIsNotCached) {
  auto project = access_.CreateProject("team");
  ASSERT_TRUE(project);
  auto token = access_.CreateToken(project->id, "ci");
  ASSERT_TRUE(token);
  store_.during_lookup = [&] { ASSERT_TRUE(access_.RevokeToken(token->record.id)); };
  EXPECT_TRUE(access_.Authenticate(token->secret));
  EXPECT_FALSE(store_.during_lookup);  // the revoke ran inside the lookup
  auto again = access_.Authenticate(token->secret);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kUnauthenticated);
}

}  // namespace
}  // namespace kiln::access
