// Kiln's own management endpoints, under /kiln/v1, for an admin token:
// projects and tokens (docs/http-api.md, "Administration").

#include "api/api.h"
#include "api/auth.h"
#include "api/errors.h"
#include "api/handler.h"
#include "api/json.h"

namespace kiln::api {
namespace {

using boost::asio::awaitable;
using http::Request;
using http::Response;

void WriteToken(JsonWriter& w, const store::TokenRecord& t, const std::string* secret) {
  w.StartObject();
  w.Key("id");
  WriteString(w, t.id);
  w.Key("project_id");
  WriteString(w, t.project_id);
  w.Key("name");
  WriteString(w, t.name);
  w.Key("admin");
  w.Bool(t.admin);
  w.Key("created_at");
  w.Int64(t.created_at / 1000);
  if (secret) {
    w.Key("token");
    WriteString(w, *secret);
  }
  w.EndObject();
}

void WriteProject(JsonWriter& w, const store::ProjectRecord& p) {
  w.StartObject();
  w.Key("id");
  WriteString(w, p.id);
  w.Key("name");
  WriteString(w, p.name);
  w.Key("created_at");
  w.Int64(p.created_at / 1000);
  w.EndObject();
}

}  // namespace

void AddAdminRoutes(http::Router& router, const Services& s) {
  router.Add("GET", "/kiln/v1/projects", [s](Request& req) -> awaitable<Response> {
    KILN_ADMIN(*s.access, req);
    KILN_TRY(all, s.access->ListProjects());
    co_return Response{200, Json([&](JsonWriter& w) {
                         w.StartObject();
                         w.Key("projects");
                         w.StartArray();
                         for (auto& p : *all) WriteProject(w, p);
                         w.EndArray();
                         w.EndObject();
                       })};
  });

  // Creates a project and its first token.
  router.Add("POST", "/kiln/v1/projects", [s](Request& req) -> awaitable<Response> {
    KILN_ADMIN(*s.access, req);
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(name, GetString(*doc, "name"));
    if (!*name) co_return ErrorResponse(Error::InvalidArgument("name is required"));
    KILN_TRY(p, s.access->CreateProject(**name));
    KILN_TRY(t, s.access->CreateToken(p->id, "default"));
    co_return Response{201, Json([&](JsonWriter& w) {
                         w.StartObject();
                         w.Key("project");
                         WriteProject(w, *p);
                         w.Key("token");
                         WriteToken(w, t->record, &t->secret);
                         w.EndObject();
                       })};
  });

  router.Add("GET", "/kiln/v1/tokens", [s](Request& req) -> awaitable<Response> {
    KILN_ADMIN(*s.access, req);
    auto pid = req.Query("project_id");
    KILN_TRY(all, s.access->ListTokens(pid ? *pid : ""));
    co_return Response{200, Json([&](JsonWriter& w) {
                         w.StartObject();
                         w.Key("tokens");
                         w.StartArray();
                         for (auto& t : *all) WriteToken(w, t, nullptr);
                         w.EndArray();
                         w.EndObject();
                       })};
  });

  router.Add("POST", "/kiln/v1/tokens", [s](Request& req) -> awaitable<Response> {
    KILN_ADMIN(*s.access, req);
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(pid, GetString(*doc, "project_id"));
    KILN_TRY(name, GetString(*doc, "name"));
    KILN_TRY(admin, GetBool(*doc, "admin"));
    if (!*pid && !admin->value_or(false))
      co_return ErrorResponse(Error::InvalidArgument("project_id is required"));
    if (*pid && admin->value_or(false))  // one that reaches every project, or one project's?
      co_return ErrorResponse(
          Error::InvalidArgument("an admin token belongs to no project: give admin or project_id"));
    KILN_TRY(t,
             s.access->CreateToken(pid->value_or(""), name->value_or(""), admin->value_or(false)));
    co_return Response{201, Json([&](JsonWriter& w) {
                         w.StartObject();
                         w.Key("token");
                         WriteToken(w, t->record, &t->secret);
                         w.EndObject();
                       })};
  });

  router.Add("DELETE", "/kiln/v1/tokens/:id", [s](Request& req) -> awaitable<Response> {
    KILN_ADMIN(*s.access, req);
    KILN_TRY(r, s.access->RevokeToken(std::string(req.Param("id"))));
    co_return Response{200, MsgJson("Revoked")};
  });
}

}  // namespace kiln::api
