#include "access/access.h"

#include "base/ids.h"

namespace kiln::access {

Result<Principal> Access::Authenticate(const std::string& secret) {
  if (secret.empty()) return Fail(Error::Unauthenticated("Missing token"));
  uint64_t revokes = 0;
  {
    std::shared_lock lock(mu_);
    auto it = verified_.find(secret);
    if (it != verified_.end()) return it->second;
    revokes = revokes_;
  }
  auto rec = store_.GetTokenByHash(Sha256Hex(secret));
  if (!rec) {
    if (rec.error().code() == ErrorCode::kNotFound)
      return Fail(Error::Unauthenticated("Invalid token"));
    return Fail(rec.error());
  }
  Principal p{rec->project_id, rec->admin};
  std::unique_lock lock(mu_);
  // A revoke since the lookup may have deleted this very token: answer
  // this request, but do not remember it.
  if (revokes_ != revokes) return p;
  if (verified_.size() > 100000) verified_.clear();
  verified_[secret] = p;
  return p;
}

Result<store::ProjectRecord> Access::CreateProject(const std::string& name) {
  if (name.empty() || name.size() > 200)
    return Fail(Error::InvalidArgument("Project name must be 1 to 200 bytes"));
  store::ProjectRecord p{NewObjectId(clock_.NowMs()), name, clock_.NowMs()};
  if (auto r = store_.PutProject(p); !r) return Fail(r.error());
  std::unique_lock lock(mu_);
  projects_[p.id] = true;
  return p;
}

Result<std::vector<store::ProjectRecord>> Access::ListProjects() { return store_.ListProjects(); }

bool Access::ProjectExists(const std::string& id) {
  {
    std::shared_lock lock(mu_);
    if (projects_.count(id)) return true;
  }
  auto all = store_.ListProjects();
  if (!all) return false;
  std::unique_lock lock(mu_);
  for (auto& p : *all) projects_[p.id] = true;
  return projects_.count(id) > 0;
}

Result<NewToken> Access::CreateToken(const std::string& project_id, const std::string& name,
                                     bool admin) {
  if (!admin && !ProjectExists(project_id)) return Fail(Error::NotFound("Project not found"));
  NewToken t;
  t.secret = RandomHex(20);
  t.record.id = RandomHex(6);
  t.record.hash = Sha256Hex(t.secret);
  t.record.project_id = admin ? "" : project_id;
  t.record.name = name;
  t.record.admin = admin;
  t.record.created_at = clock_.NowMs();
  if (auto r = store_.PutToken(t.record); !r) return Fail(r.error());
  return t;
}

Result<std::vector<store::TokenRecord>> Access::ListTokens(const std::string& project_id) {
  auto all = store_.ListTokens();
  if (!all || project_id.empty()) return all;
  std::vector<store::TokenRecord> out;
  for (auto& t : *all)
    if (t.project_id == project_id) out.push_back(std::move(t));
  return out;
}

Result<void> Access::RevokeToken(const std::string& token_id) {
  if (auto r = store_.DeleteToken(token_id); !r) return r;
  std::unique_lock lock(mu_);
  verified_.clear();  // cheap and rare: forget every cached secret
  ++revokes_;
  return Ok();
}

}  // namespace kiln::access
