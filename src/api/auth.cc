#include "api/auth.h"

#include <algorithm>
#include <cctype>

namespace kiln::api {

std::string TokenOf(const http::Request& req) {
  auto h = req.Header("authorization");
  auto starts_with = [&](std::string_view scheme) {  // schemes are case-insensitive
    return h.size() > scheme.size() &&
           std::equal(scheme.begin(), scheme.end(), h.begin(), [](char a, char b) {
             return std::tolower(static_cast<unsigned char>(a)) ==
                    std::tolower(static_cast<unsigned char>(b));
           });
  };
  for (std::string_view scheme : {"OAuth ", "Bearer "}) {
    if (starts_with(scheme)) {
      auto t = h.substr(scheme.size());
      while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
      while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
      return std::string(t);
    }
  }
  if (auto q = req.Query("oauth")) return *q;
  return {};
}

namespace {

Result<access::Principal> AuthorizeToken(access::Access& access, const std::string& token,
                                         const std::string& project_id) {
  auto p = access.Authenticate(token);
  if (!p) return p;
  if (p->admin) {
    if (!access.ProjectExists(project_id)) return Fail(Error::NotFound("Project not found"));
    return p;
  }
  if (p->project_id != project_id)
    return Fail(Error::Unauthenticated("Token is not valid for this project"));
  return p;
}

}  // namespace

Result<access::Principal> Authorize(access::Access& access, const http::Request& req,
                                    const std::string& project_id) {
  std::string token = TokenOf(req);
  auto p = AuthorizeToken(access, token, project_id);
  if (p || p.error().code() != ErrorCode::kUnauthenticated) return p;
  // A webhook's sender may add an Authorization header of its own (a
  // signed push, say): the token in the URL counts as well.
  if (auto q = req.Query("oauth"); q && *q != token)
    if (auto second = AuthorizeToken(access, *q, project_id)) return second;
  return p;
}

Result<access::Principal> AuthorizeAdmin(access::Access& access, const http::Request& req) {
  auto p = access.Authenticate(TokenOf(req));
  if (!p) return p;
  if (!p->admin) return Fail(Error::PermissionDenied("This needs an admin token"));
  return p;
}

}  // namespace kiln::api
