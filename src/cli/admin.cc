// `kiln project ...` and `kiln token ...`: administration with the admin
// token (--admin-token, KILN_ADMIN_TOKEN, or DATA/admin.token).

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/output.h"

namespace kiln::cli {
namespace {

struct AdminFlags {
  Connection conn;
  std::string admin_token;
  std::string data_dir = "data";
  bool json = false;
};

// The admin token reaches every project: it goes where --scheme, --host and
// --port say (or KILN_SCHEME, KILN_HOST, KILN_PORT), by default this
// machine's http://127.0.0.1:8080,
// and never where IRON_* variables or an iron.json of the working directory
// or ~ point (a cloned repository's iron.json could name any server).
Connection AdminConnection(const AdminFlags& f) {
  Connection c = f.conn;
  c.project_id = "-";  // not used
  if (c.scheme.empty())
    if (const char* v = std::getenv("KILN_SCHEME")) c.scheme = v;
  if (c.scheme.empty()) c.scheme = "http";
  if (c.host.empty())
    if (const char* v = std::getenv("KILN_HOST")) c.host = v;
  if (c.port.empty())
    if (const char* v = std::getenv("KILN_PORT")) c.port = v;
  if (c.host.empty()) c.host = "127.0.0.1";
  if (c.port.empty()) c.port = c.scheme == "https" ? "443" : "8080";
  c.token = f.admin_token;
  if (c.token.empty()) {
    if (const char* v = std::getenv("KILN_ADMIN_TOKEN")) c.token = v;
  }
  if (c.token.empty()) {
    std::ifstream in(f.data_dir + "/admin.token");
    std::getline(in, c.token);
  }
  if (c.token.empty()) {
    std::fprintf(stderr,
                 "kiln: no admin token: pass --admin-token, set KILN_ADMIN_TOKEN, or run where "
                 "%s/admin.token is readable (--data)\n",
                 f.data_dir.c_str());
    std::exit(2);
  }
  return c;
}

void Common(CLI::App* cmd, AdminFlags& f) {
  cmd->add_option("--scheme", f.conn.scheme, "http or https (KILN_SCHEME; default http)");
  cmd->add_option("--host", f.conn.host, "Server host (KILN_HOST; default 127.0.0.1)");
  cmd->add_option("--port", f.conn.port, "Server port (KILN_PORT; default 8080)");
  cmd->add_option("--admin-token", f.admin_token, "Admin token (KILN_ADMIN_TOKEN)");
  cmd->add_option("--data", f.data_dir, "Data directory holding admin.token")->envname("KILN_DATA");
  cmd->add_flag("--json", f.json, "Print the server's JSON reply");
}

void PrintToken(const rapidjson::Value& t) {
  std::printf("%s  project %s  %s%s\n", Str(t, "id"), Str(t, "project_id"), Str(t, "name"),
              Bool(t, "admin") ? "  (admin)" : "");
  if (*Str(t, "token")) std::printf("token: %s  (shown once)\n", Str(t, "token"));
}

}  // namespace

void AddAdminCommands(CLI::App& app) {
  auto f = std::make_shared<AdminFlags>();
  auto name = std::make_shared<std::string>();
  auto project = std::make_shared<std::string>();

  auto* projects = app.add_subcommand("project", "Projects (admin)");
  projects->require_subcommand(1);
  projects->fallthrough();
  Common(projects, *f);
  auto* pcreate = projects->add_subcommand("create", "Create a project and its first token");
  pcreate->add_option("name", *name, "Project name")->required()->check(kNonEmpty);
  pcreate->callback([=] {
    auto c = AdminConnection(*f);
    std::string body = "{\"name\":" + JsonString(*name) + "}";
    std::exit(Print(Call(c, "POST", "/kiln/v1/projects", body), f->json,
                    [](const rapidjson::Document& d) {
                      std::printf("project_id: %s\n", Str(Field(d, "project"), "id"));
                      std::printf("token: %s\n", Str(Field(d, "token"), "token"));
                    }));
  });
  projects->add_subcommand("list", "List projects")->callback([=] {
    auto c = AdminConnection(*f);
    std::exit(Print(Call(c, "GET", "/kiln/v1/projects"), f->json, [](const rapidjson::Document& d) {
      for (const auto& p : Array(d, "projects"))
        std::printf("%s  %s\n", Str(p, "id"), Str(p, "name"));
    }));
  });

  auto* tokens = app.add_subcommand("token", "Tokens (admin)");
  tokens->require_subcommand(1);
  tokens->fallthrough();
  Common(tokens, *f);
  auto* tcreate = tokens->add_subcommand("create", "Create a token for a project");
  tcreate->add_option("--project", *project, "Project id")->required()->check(kNonEmpty);
  tcreate->add_option("--name", *name, "A name to recognise it by");
  tcreate->callback([=] {
    auto c = AdminConnection(*f);
    std::string body =
        "{\"project_id\":" + JsonString(*project) + ",\"name\":" + JsonString(*name) + "}";
    std::exit(Print(Call(c, "POST", "/kiln/v1/tokens", body), f->json,
                    [](const rapidjson::Document& d) { PrintToken(Field(d, "token")); }));
  });
  auto* tlist = tokens->add_subcommand("list", "List tokens (never their secrets)");
  tlist->add_option("--project", *project, "Only this project's");
  tlist->callback([=] {
    auto c = AdminConnection(*f);
    std::string target = "/kiln/v1/tokens";
    if (!project->empty()) target += "?project_id=" + Escape(*project);
    std::exit(Print(Call(c, "GET", target), f->json, [](const rapidjson::Document& d) {
      for (const auto& t : Array(d, "tokens")) PrintToken(t);
    }));
  });
  auto* revoke = tokens->add_subcommand("revoke", "Revoke a token by its id");
  revoke->add_option("id", *name, "Token id (from token list)")->required()->check(kNonEmpty);
  revoke->callback([=] {
    auto c = AdminConnection(*f);
    std::exit(Print(Call(c, "DELETE", "/kiln/v1/tokens/" + Escape(*name)), f->json,
                    [](const rapidjson::Document& d) { std::printf("%s\n", Str(d, "msg")); }));
  });
}

}  // namespace kiln::cli
