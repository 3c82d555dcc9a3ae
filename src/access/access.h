// Projects and tokens: who may call the API and which project they reach.
// A token belongs to one project, or is an admin token that manages projects
// and tokens. Secrets are stored as SHA-256 hashes; a verified secret is
// cached in memory. Thread-safe.
#pragma once

#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "store/store.h"

namespace kiln::access {

struct Principal {
  std::string project_id;  // empty for admin
  bool admin = false;
};

struct NewToken {
  store::TokenRecord record;
  std::string secret;  // shown once
};

class Access {
 public:
  Access(store::Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  // Unauthenticated when `secret` is unknown or revoked.
  Result<Principal> Authenticate(const std::string& secret);

  Result<store::ProjectRecord> CreateProject(const std::string& name);
  Result<std::vector<store::ProjectRecord>> ListProjects();
  bool ProjectExists(const std::string& id);
  // NotFound when `project_id` is unknown (and not admin).
  Result<NewToken> CreateToken(const std::string& project_id, const std::string& name,
                               bool admin = false);
  // Every token, or those of one project when `project_id` is set.
  Result<std::vector<store::TokenRecord>> ListTokens(const std::string& project_id = "");
  Result<void> RevokeToken(const std::string& token_id);

 private:
  store::Store& store_;
  const Clock& clock_;
  std::shared_mutex mu_;
  std::unordered_map<std::string, Principal> verified_;  // by secret
  uint64_t revokes_ = 0;  // RevokeToken calls: a lookup that overlaps one is not cached
  std::unordered_map<std::string, bool> projects_;  // known project ids
};

}  // namespace kiln::access
