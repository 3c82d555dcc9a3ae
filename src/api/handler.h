// Early returns shared by the coroutine handlers of api/*_routes.cc. Include
// after api/auth.h and api/errors.h, in .cc files only.
//   KILN_TRY(var, expr)           var = expr, or answer its Error
//   KILN_AUTH(access, req, proj)  proj = the :project param, or answer 401/404
//   KILN_ADMIN(access, req)       answer 401/403 unless the token is an admin's
#pragma once

#define KILN_TRY(var, expr) \
  auto var = (expr);        \
  if (!var) co_return ErrorResponse(var.error());

#define KILN_AUTH(access, req, project)                       \
  std::string project(req.Param("project"));                  \
  if (auto auth_ = Authorize(access, req, project); !auth_) { \
    co_return ErrorResponse(auth_.error());                   \
  }

#define KILN_ADMIN(access, req)                           \
  if (auto auth_ = AuthorizeAdmin(access, req); !auth_) { \
    co_return ErrorResponse(auth_.error());               \
  }
