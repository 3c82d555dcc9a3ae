// `kiln worker ...` (codes), `kiln task ...` and `kiln schedule ...`: the
// IronWorker v2 API from the shell, found and authorized like `kiln mq`.

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <tuple>
#include <utility>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/output.h"
#include "runner/code_package.h"

namespace kiln::cli {
namespace {

struct Flags {
  Connection conn;
  bool json = false;
};

std::shared_ptr<Flags> AddConnectionFlags(CLI::App* cmd) {
  auto f = std::make_shared<Flags>();
  cmd->require_subcommand(1);
  cmd->fallthrough();
  cmd->add_option("--scheme", f->conn.scheme,
                  "http or https (IRON_SCHEME, iron.json; default http)");
  cmd->add_option("--host", f->conn.host, "Server host (IRON_HOST, iron.json)");
  cmd->add_option("--port", f->conn.port, "Server port (IRON_PORT, iron.json)");
  cmd->add_option("--project-id", f->conn.project_id, "Project id (IRON_PROJECT_ID, iron.json)");
  cmd->add_option("--token", f->conn.token, "Token (IRON_TOKEN, iron.json)");
  cmd->add_flag("--json", f->json, "Print the server's JSON reply");
  return f;
}

std::string Base(const Connection& c) { return "/2/projects/" + c.project_id; }

// Lists every page of `path` (objects in the array `key`, 100 a page, as
// many pages as the API gives: 101), printing each object with `one`, or
// with --json all of them as one {"key":[...]}; exits.
[[noreturn]] void ListAll(const Connection& c, const std::string& path, const char* key, bool json,
                          const std::function<void(const rapidjson::Value&)>& one) {
  std::string all;
  for (int page = 0; page <= 100; ++page) {
    auto reply = Call(c, "GET", path + "?per_page=100&page=" + std::to_string(page));
    rapidjson::Document d;
    if (reply && reply->status == 200) d.Parse<rapidjson::kParseIterativeFlag>(reply->body.c_str());
    if (!reply || reply->status != 200 || !Field(d, key).IsArray())
      std::exit(Print(reply, json, [](const rapidjson::Document&) {}));
    size_t got = 0;
    for (const auto& x : Array(d, key)) {
      ++got;
      if (!json) {
        one(x);
        continue;
      }
      rapidjson::StringBuffer sb;
      rapidjson::Writer<rapidjson::StringBuffer> w(sb);
      x.Accept(w);
      all += (all.empty() ? "" : ",") + std::string(sb.GetString(), sb.GetSize());
    }
    if (got < 100) break;
  }
  if (json) std::printf("{\"%s\":[%s]}\n", key, all.c_str());
  std::exit(0);
}

// The id of the first object of the array `key` (a batch of one created).
const char* FirstId(const rapidjson::Value& d, const char* key) {
  auto a = Array(d, key);
  return a.Empty() ? "" : Str(a[0], "id");
}

// The time `key` of `o` (RFC 3339), or "" when it has none: Go's zero time
// (0001-01-01...), which the API gives for "never", counts as none.
std::string TimeOf(const rapidjson::Value& o, const char* key) {
  std::string at = Str(o, key);
  return at.starts_with("0001-") ? "" : at;
}

// `text` on one line: its line breaks (an error tail's) shown as spaces.
std::string OneLine(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

void PrintTask(const rapidjson::Value& t) {
  std::printf("%s  %-9s  %s rev %s", Str(t, "id"), Str(t, "status"), Str(t, "code_name"),
              Str(t, "code_rev"));
  if (Has(t, "duration")) std::printf("  %ld ms", static_cast<long>(Int(t, "duration")));
  std::string msg = OneLine(Str(t, "msg"));  // one line a task
  if (!msg.empty()) std::printf("  %s", msg.c_str());
  std::printf("\n");
}

struct CodeFlags {
  std::string name, command, stack, runtime, file_name, config, network;
  std::vector<std::string> env;
  // Sent only when given, and then as given: the server checks them (400).
  std::optional<int64_t> max_concurrency, retries, retries_delay, memory, disk, priority;
};

void AddCodeOptions(CLI::App* cmd, CodeFlags& c) {
  cmd->add_option("--name", c.name, "Code name")->required()->check(kNonEmpty);
  cmd->add_option("--command", c.command, "Command, run by /bin/sh -c in the task dir");
  cmd->add_option("--config", c.config, "Config text, given to tasks as CONFIG_FILE");
  cmd->add_option("--env", c.env, "Environment variable K=V (repeatable)")
      ->check(kNameEqualsValue)
      ->allow_extra_args(false);  // one value each: the next word is not taken
  cmd->add_option("--max-concurrency", c.max_concurrency, "Most tasks of the code at once");
  cmd->add_option("--retries", c.retries, "Retries of a failed task (0-10)");
  cmd->add_option("--retries-delay", c.retries_delay, "Seconds before a retry");
  cmd->add_option("--memory", c.memory, "Memory limit in MB (default 512)");
  cmd->add_option("--disk", c.disk, "Task dir limit in MB, its largest file's too (default 10240)");
  cmd->add_option("--priority", c.priority, "Priority of its tasks that give none: 0, 1 or 2")
      ->check(CLI::Range(0, 2));
  cmd->add_option("--network", c.network, "none (default: loopback only) or host");
}

std::string CodeData(const CodeFlags& c, const std::string& image) {
  std::string d = "{\"name\":" + JsonString(c.name);
  auto add = [&](const char* k, const std::string& v) {
    if (!v.empty()) d += std::string(",\"") + k + "\":" + JsonString(v);
  };
  auto num = [&](const char* k, std::optional<int64_t> v) {
    if (v) d += std::string(",\"") + k + "\":" + std::to_string(*v);
  };
  add("image", image);
  add("command", c.command);
  add("stack", c.stack);
  add("runtime", c.runtime);
  add("file_name", c.file_name);
  add("config", c.config);
  add("network", c.network);
  num("max_concurrency", c.max_concurrency);
  num("retries", c.retries);
  num("retries_delay", c.retries_delay);
  num("memory", c.memory);
  num("disk", c.disk);
  num("default_priority", c.priority);
  if (!c.env.empty()) {
    d += ",\"env_vars\":{";
    for (size_t i = 0; i < c.env.size(); ++i) {
      auto eq = c.env[i].find('=');  // there (kNameEqualsValue)
      d += (i ? "," : "") + JsonString(c.env[i].substr(0, eq)) + ":" +
           JsonString(c.env[i].substr(eq + 1));
    }
    d += "}";
  }
  return d + "}";
}

// The name of the code `id_or_name` names: tasks and schedules are queued
// by code name, and a user may give the id `worker ls` shows. As given when
// no such code is found (the server's answer then says so).
std::string CodeName(const Connection& c, const std::string& id_or_name) {
  auto r = Call(c, "GET", Base(c) + "/codes/" + Escape(id_or_name));
  if (!r || r->status != 200) return id_or_name;
  rapidjson::Document d;
  d.Parse(r->body.c_str());
  return *Str(d, "name") ? Str(d, "name") : id_or_name;
}

// What a task is queued with, by `task queue` and by `schedule create`:
// sent only when given, and then as given (the server checks them: 400).
struct RunFlags {
  std::optional<int64_t> priority, delay, timeout;
  std::string label, cluster;
};

void AddRunOptions(CLI::App* cmd, RunFlags& r) {
  cmd->add_option("--priority", r.priority, "0, 1 or 2 (default: the code's)")
      ->check(CLI::Range(0, 2));
  cmd->add_option("--delay", r.delay, "Seconds a task waits before it may run");
  cmd->add_option("--timeout", r.timeout, "Seconds a task may run (default 3600)");
  cmd->add_option("--label", r.label, "A label to find tasks by");
  cmd->add_option("--cluster", r.cluster, "Cluster (Kiln has one: default)");
}

// The fields of `r` that were given, each after a comma.
std::string RunFields(const RunFlags& r) {
  std::string d;
  for (auto [k, v] : {std::pair{"priority", r.priority}, std::pair{"delay", r.delay},
                      std::pair{"timeout", r.timeout}})
    if (v) d += std::string(",\"") + k + "\":" + std::to_string(*v);
  for (auto [k, v] : {std::pair{"label", &r.label}, std::pair{"cluster", &r.cluster}})
    if (!v->empty()) d += std::string(",\"") + k + "\":" + JsonString(*v);
  return d;
}

// POST /codes as iron_worker sends it: multipart "data" and an optional zip "file".
int Upload(const Flags& f, const std::string& data, const std::string& zip) {
  const std::string b = "--------------------KILNCLIBOUNDARY";
  std::string body =
      "--" + b + "\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n" + data + "\r\n";
  if (!zip.empty())
    body += "--" + b +
            "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"worker.zip\"\r\n"
            "Content-Type: application/zip\r\n\r\n" +
            zip + "\r\n";
  body += "--" + b + "--";
  auto c = Resolve(f.conn, Product::kWorker);
  return Print(Call(c, "POST", Base(c) + "/codes", body, "multipart/form-data; boundary=" + b),
               f.json, [](const rapidjson::Document& d) {
                 std::printf("code %s rev %ld uploaded\n", Str(d, "id"),
                             static_cast<long>(Int(d, "rev")));
               });
}

void AddWorker(CLI::App& app) {
  auto* worker = app.add_subcommand("worker", "Codes to run as tasks (IronWorker v2)");
  auto f = AddConnectionFlags(worker);
  auto code = std::make_shared<CodeFlags>();

  auto* upload = worker->add_subcommand("upload", "Zip a directory and upload it as a code");
  auto dir = std::make_shared<std::string>();
  upload->add_option("dir", *dir, "Directory with the code")->required()->check(kNonEmpty);
  upload->add_option("--stack", code->stack, "Image the code runs on (default: by runtime)");
  upload->add_option("--runtime", code->runtime, "sh, python, node, ruby, php or binary");
  upload->add_option("--file-name", code->file_name, "File the runtime runs");
  AddCodeOptions(upload, *code);
  upload->callback([=] {
    if (code->command.empty() && code->file_name.empty()) {
      std::fprintf(stderr, "kiln: give --command, or --file-name with --runtime\n");
      std::exit(static_cast<int>(CLI::ExitCodes::RequiredError));  // a bad argument: 100 and up
    }
    auto zip = runner::ZipDirectory(*dir);
    if (!zip) {
      std::fprintf(stderr, "kiln: %s\n", zip.error().message().c_str());
      std::exit(1);
    }
    std::exit(Upload(*f, CodeData(*code, ""), *zip));
  });

  auto* reg = worker->add_subcommand("register", "Register an image as a code");
  auto image = std::make_shared<std::string>();
  reg->add_option("image", *image, "Image name (kiln image ls) or busybox")
      ->required()
      ->check(kNonEmpty);
  AddCodeOptions(reg, *code);
  reg->callback([=] {  // without --command, the image's Entrypoint and Cmd run
    std::exit(Upload(*f, CodeData(*code, *image), ""));
  });

  worker->add_subcommand("ls", "List codes")->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    ListAll(c, Base(c) + "/codes", "codes", f->json, [](const rapidjson::Value& x) {
      std::printf("%s  %-20s rev %ld  %s\n", Str(x, "id"), Str(x, "name"),
                  static_cast<long>(Int(x, "rev")), Str(x, "status"));
    });
  });

  // The commands on one code take its id or its name (the API looks the
  // id up first).
  auto which = std::make_shared<std::string>();
  auto code_path = [which](const Connection& c) { return Base(c) + "/codes/" + Escape(*which); };
  auto add_on_code = [&](const char* name, const char* about) {
    auto* cmd = worker->add_subcommand(name, about);
    cmd->add_option("code", *which, "Code id or name")->required()->check(kNonEmpty);
    return cmd;
  };

  add_on_code("info", "Show a code")->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    std::exit(Print(Call(c, "GET", code_path(c)), f->json, [](const rapidjson::Document& d) {
      std::printf("id               %s\n", Str(d, "id"));
      std::printf("name             %s\n", Str(d, "name"));
      std::printf("rev              %ld (%s)\n", static_cast<long>(Int(d, "rev")),
                  Str(d, "latest_change"));
      std::printf("status           %s\n", Str(d, "status"));
      if (*Str(d, "image")) std::printf("image            %s\n", Str(d, "image"));
      if (*Str(d, "stack")) std::printf("stack            %s\n", Str(d, "stack"));
      if (*Str(d, "runtime"))
        std::printf("runtime          %s %s\n", Str(d, "runtime"), Str(d, "file_name"));
      if (*Str(d, "command")) std::printf("command          %s\n", Str(d, "command"));
      long most = static_cast<long>(Int(d, "max_concurrency"));
      if (most > 0)
        std::printf("max_concurrency  %ld\n", most);
      else
        std::printf("max_concurrency  no limit\n");
      if (Int(d, "retries") > 0)
        std::printf("retries          %ld every %ld s\n", static_cast<long>(Int(d, "retries")),
                    static_cast<long>(Int(d, "retries_delay")));
      else
        std::printf("retries          0\n");
      std::printf("priority         %ld (of tasks that give none)\n",
                  static_cast<long>(Int(d, "default_priority")));
      std::printf("memory           %ld MB\n", static_cast<long>(Int(d, "memory")));
      std::printf("disk             %ld MB\n", static_cast<long>(Int(d, "disk")));
      std::printf("network          %s\n", Str(d, "network"));
      const auto& env = Field(d, "env_vars");
      if (env.IsObject())
        for (auto it = env.MemberBegin(); it != env.MemberEnd(); ++it)
          if (it->name.IsString() && it->value.IsString())
            std::printf("env              %s=%s\n", it->name.GetString(), it->value.GetString());
      if (*Str(d, "config")) std::printf("config           %s\n", Str(d, "config"));
    }));
  });

  add_on_code("rm", "Delete a code, its revisions and its packages")->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    std::exit(Print(Call(c, "DELETE", code_path(c)), f->json, [=](const rapidjson::Document&) {
      std::printf("code %s deleted\n", which->c_str());
    }));
  });

  add_on_code("revisions", "List a code's revisions, newest first")->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    ListAll(c, code_path(c) + "/revisions", "revisions", f->json, [](const rapidjson::Value& r) {
      std::string what = *Str(r, "image") ? Str(r, "image") : "zip";
      if (!*Str(r, "image") && Has(r, "code_size"))
        what += " " + std::to_string(Int(r, "code_size")) + " bytes";
      if (*Str(r, "file_name")) what += std::string("  ") + Str(r, "file_name");
      if (*Str(r, "command")) what += std::string("  ") + Str(r, "command");
      std::printf("rev %-4ld  %s  %s\n", static_cast<long>(Int(r, "rev")), Str(r, "created_at"),
                  what.c_str());
    });
  });

  for (auto [name, about, path, said] :
       {std::tuple{"pause", "Hold a code's queued tasks: none starts until resume",
                   "/pause_task_queue", "paused"},
        std::tuple{"resume", "Let a paused code's tasks start again", "/resume_task_queue",
                   "resumed"}}) {
    add_on_code(name, about)->callback([=] {
      auto c = Resolve(f->conn, Product::kWorker);
      std::exit(Print(
          Call(c, "POST", code_path(c) + path), f->json,
          [=](const rapidjson::Document&) { std::printf("code %s %s\n", which->c_str(), said); }));
    });
  }

  add_on_code("cancel-all", "Cancel every queued task of a code (running ones: task cancel)")
      ->callback([=] {
        auto c = Resolve(f->conn, Product::kWorker);
        std::exit(Print(Call(c, "POST", code_path(c) + "/cancel_all"), f->json,
                        [](const rapidjson::Document& d) {
                          std::printf("%ld tasks cancelled\n",
                                      static_cast<long>(Int(d, "cancelled")));
                        }));
      });

  auto* stats = add_on_code("stats", "Count a code's tasks by state");
  auto hours = std::make_shared<int64_t>(24);
  stats->add_option("--hours", *hours, "Tasks queued in the last N hours (default 24)")
      ->check(CLI::Range(int64_t{1}, int64_t{24 * 366}));
  stats->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    long now = static_cast<long>(std::time(nullptr));
    std::string span =
        "?start_date=" + std::to_string(now - *hours * 3600) + "&end_date=" + std::to_string(now);
    std::exit(Print(Call(c, "GET", code_path(c) + "/stats" + span), f->json,
                    [](const rapidjson::Document& d) {
                      if (!d.IsObject()) return;
                      for (auto it = d.MemberBegin(); it != d.MemberEnd(); ++it)
                        if (it->name.IsString() && it->value.IsInt64())
                          std::printf("%-10s %ld\n", it->name.GetString(),
                                      static_cast<long>(it->value.GetInt64()));
                    }));
  });
}

void AddTask(CLI::App& app) {
  auto* task = app.add_subcommand("task", "Tasks (IronWorker v2)");
  auto f = AddConnectionFlags(task);
  auto id = std::make_shared<std::string>();

  auto* queue = task->add_subcommand("queue", "Queue a task of a code");
  auto code = std::make_shared<std::string>();
  auto payload = std::make_shared<std::string>("{}");
  auto run = std::make_shared<RunFlags>();
  queue->add_option("code", *code, "Code name or id")->required()->check(kNonEmpty);
  queue->add_option("--payload", *payload, "Payload text (default {})");
  AddRunOptions(queue, *run);
  queue->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    std::string t = "{\"code_name\":" + JsonString(CodeName(c, *code)) +
                    ",\"payload\":" + JsonString(*payload) + RunFields(*run);
    std::exit(
        Print(Call(c, "POST", Base(c) + "/tasks", "{\"tasks\":[" + t + "}]}"), f->json,
              [](const rapidjson::Document& d) { std::printf("%s\n", FirstId(d, "tasks")); }));
  });

  auto* ls = task->add_subcommand("ls", "List tasks, newest first");
  auto status = std::make_shared<std::string>();
  ls->add_option("--code", *code, "Only tasks of this code");
  ls->add_option("--status", *status, "Only tasks in this state (queued, running, error, ...)")
      ->check(CLI::IsMember({"queued", "preparing", "running", "complete", "error", "cancelled",
                             "killed", "timeout"}));
  auto page = std::make_shared<int>(0);
  ls->add_option("--page", *page, "Older tasks: page N of 100 (0: the newest 100)")
      ->check(CLI::Range(0, 100));
  ls->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    std::string target = Base(c) + "/tasks?per_page=100&page=" + std::to_string(*page);
    if (!code->empty()) target += "&code_name=" + Escape(*code);
    if (!status->empty()) target += "&" + Escape(*status) + "=1";
    int p = *page;
    std::exit(Print(Call(c, "GET", target), f->json, [p](const rapidjson::Document& d) {
      for (const auto& t : Array(d, "tasks")) PrintTask(t);
      if (Array(d, "tasks").Size() == 100 && p < 100)
        std::fprintf(stderr, "(100 shown; --page %d for older ones)\n", p + 1);
    }));
  });

  auto* info = task->add_subcommand("info", "Show a task");
  info->add_option("id", *id, "Task id")->required()->check(kNonEmpty);
  info->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    std::exit(Print(Call(c, "GET", Base(c) + "/tasks/" + Escape(*id)), f->json,
                    [](const rapidjson::Document& t) {
                      std::printf("id          %s\n", Str(t, "id"));
                      std::printf("code        %s rev %s\n", Str(t, "code_name"),
                                  Str(t, "code_rev"));
                      std::printf("status      %s\n", Str(t, "status"));
                      if (*Str(t, "msg"))
                        std::printf("msg         %s\n", OneLine(Str(t, "msg")).c_str());
                      if (Int(t, "percent") > 0)
                        std::printf("progress    %ld%%\n", static_cast<long>(Int(t, "percent")));
                      if (Has(t, "exit_code"))
                        std::printf("exit_code   %ld\n", static_cast<long>(Int(t, "exit_code")));
                      std::printf("priority    %ld\n", static_cast<long>(Int(t, "priority")));
                      std::printf("timeout     %ld s\n", static_cast<long>(Int(t, "timeout")));
                      if (Int(t, "delay"))
                        std::printf("delay       %ld s\n", static_cast<long>(Int(t, "delay")));
                      if (*Str(t, "label")) std::printf("label       %s\n", Str(t, "label"));
                      for (const char* k : {"created_at", "start_time", "end_time"})
                        if (auto at = TimeOf(t, k); !at.empty())
                          std::printf("%-11s %s\n", k, at.c_str());
                      if (Has(t, "duration"))
                        std::printf("duration    %ld ms\n", static_cast<long>(Int(t, "duration")));
                      if (Int(t, "retry_count"))
                        std::printf("retries     %ld\n", static_cast<long>(Int(t, "retry_count")));
                      if (*Str(t, "original_task_id"))
                        std::printf("retry_of    %s\n", Str(t, "original_task_id"));
                      if (*Str(t, "schedule_id"))
                        std::printf("schedule    %s\n", Str(t, "schedule_id"));
                      std::printf("log         %ld bytes\n", static_cast<long>(Int(t, "log_size")));
                      std::printf("payload     %s\n", Str(t, "payload"));
                    }));
  });

  auto* cancel = task->add_subcommand("cancel", "Cancel a queued or running task");
  cancel->add_option("id", *id, "Task id")->required()->check(kNonEmpty);
  cancel->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    // The API says "Cancelled" for a task that had ended too (as IronWorker
    // did): its state before the cancel says which it was.
    std::string before;
    if (auto t = Call(c, "GET", Base(c) + "/tasks/" + Escape(*id)); t && t->status == 200) {
      rapidjson::Document task;
      task.Parse(t->body.c_str());
      before = Str(task, "status");
    }
    bool ended = before == "complete" || before == "error" || before == "timeout" ||
                 before == "cancelled" || before == "killed";
    std::exit(Print(Call(c, "POST", Base(c) + "/tasks/" + Escape(*id) + "/cancel"), f->json,
                    [&](const rapidjson::Document& d) {
                      if (ended)
                        std::printf("Task %s had already ended: %s\n", id->c_str(), before.c_str());
                      else
                        std::printf("%s\n", Str(d, "msg"));
                    }));
  });

  auto* retry = task->add_subcommand("retry", "Queue a task again, as a new task");
  auto retry_delay = std::make_shared<int64_t>(0);
  retry->add_option("id", *id, "Task id")->required()->check(kNonEmpty);
  retry->add_option("--delay", *retry_delay, "Seconds to wait before it may run")
      ->check(CLI::Range(int64_t{0}, int64_t{604800}));
  retry->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    std::exit(Print(
        Call(c, "POST", Base(c) + "/tasks/" + Escape(*id) + "/retry",
             "{\"delay\":" + std::to_string(*retry_delay) + "}"),
        f->json, [](const rapidjson::Document& d) { std::printf("%s\n", FirstId(d, "tasks")); }));
  });

  // The id may come from TASK_ID, the variable a task's own environment has
  // (a task writes its progress to PROGRESS_FILE; this is for scripts around it).
  auto* progress = task->add_subcommand("progress", "Set a running task's progress");
  auto percent = std::make_shared<int64_t>(-1);
  auto msg = std::make_shared<std::string>();
  progress->add_option("id", *id, "Task id (default $TASK_ID)")->envname("TASK_ID");
  progress->add_option("--percent", *percent, "0 to 100")->check(CLI::Range(0, 100));
  progress->add_option("--msg", *msg, "A line about where it is");
  progress->callback([=] {
    if (id->empty() || (*percent < 0 && msg->empty())) {
      std::fprintf(stderr, "kiln: give a task id (or TASK_ID) and --percent or --msg\n");
      std::exit(static_cast<int>(CLI::ExitCodes::RequiredError));
    }
    auto c = Resolve(f->conn, Product::kWorker);
    std::string body = "{";
    if (*percent >= 0) body += "\"percent\":" + std::to_string(*percent);
    if (!msg->empty())
      body += std::string(*percent >= 0 ? "," : "") + "\"msg\":" + JsonString(*msg);
    body += "}";
    std::exit(Print(Call(c, "POST", Base(c) + "/tasks/" + Escape(*id) + "/progress", body), f->json,
                    [](const rapidjson::Document& d) { std::printf("%s\n", Str(d, "msg")); }));
  });

  auto* log = task->add_subcommand("log", "Print a task's output");
  auto follow = std::make_shared<bool>(false);
  log->add_option("id", *id, "Task id")->required()->check(kNonEmpty);
  log->add_flag("--follow,-f", *follow, "Keep printing until the task ends");
  log->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    std::string path = Base(c) + "/tasks/" + Escape(*id);
    size_t printed = 0;
    for (;;) {
      // The state before the log: a task that ended has all of its log.
      auto t = Call(c, "GET", path);
      if (!t || t->status != 200) std::exit(Print(t, f->json, [](const rapidjson::Document&) {}));
      rapidjson::Document d;
      d.Parse<rapidjson::kParseIterativeFlag>(t->body.c_str());
      std::string st = Str(d, "status");
      bool done = st != "queued" && st != "preparing" && st != "running";
      // Only what is new (Kiln's ?offset=).
      auto r = Call(c, "GET", path + "/log?offset=" + std::to_string(printed));
      if (r && r->status == 200) {
        std::fwrite(r->body.data(), 1, r->body.size(), stdout);
        std::fflush(stdout);
        printed += r->body.size();
      } else if (!*follow || done) {
        std::exit(Print(r, f->json, [](const rapidjson::Document&) {}));
      }
      if (*follow && done && st != "complete") {
        // As `docker run` would: a script learns that the task failed.
        std::fprintf(stderr, "kiln: task %s ended %s: %s\n", id->c_str(), st.c_str(),
                     Str(d, "msg"));
        std::exit(1);
      }
      if (!*follow || done) std::exit(0);
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  });
}

void AddSchedule(CLI::App& app) {
  auto* sched = app.add_subcommand("schedule", "Schedules that queue tasks (IronWorker v2)");
  auto f = AddConnectionFlags(sched);

  auto* create = sched->add_subcommand("create", "Schedule a code");
  auto code = std::make_shared<std::string>();
  auto payload = std::make_shared<std::string>("{}");
  auto every = std::make_shared<int64_t>(0);
  auto times = std::make_shared<int64_t>(0);
  auto cron = std::make_shared<std::string>();
  auto tz = std::make_shared<std::string>();
  auto start = std::make_shared<std::string>();
  auto end = std::make_shared<std::string>();
  auto run = std::make_shared<RunFlags>();
  create->add_option("code", *code, "Code name or id")->required()->check(kNonEmpty);
  create->add_option("--payload", *payload, "Payload of each task (default {})");
  create->add_option("--run-every", *every, "Seconds between runs (at least 60)");
  create->add_option("--run-times", *times, "Most runs");
  create->add_option("--cron", *cron, "Cron expression (Kiln extension)");
  create->add_option("--time-zone", *tz, "Time zone of --cron, e.g. Europe/Berlin");
  create->add_option("--start-at", *start, "First run, RFC 3339 (default now)");
  create->add_option("--end-at", *end, "No run after this, RFC 3339");
  auto sched_name = std::make_shared<std::string>();
  create->add_option("--name", *sched_name, "A name for the schedule");
  AddRunOptions(create, *run);
  create->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    std::string s =
        "{\"code_name\":" + JsonString(CodeName(c, *code)) + ",\"payload\":" + JsonString(*payload);
    if (*every) s += ",\"run_every\":" + std::to_string(*every);
    if (*times) s += ",\"run_times\":" + std::to_string(*times);
    if (!cron->empty()) s += ",\"cron\":" + JsonString(*cron);
    if (!tz->empty()) s += ",\"time_zone\":" + JsonString(*tz);
    if (!start->empty()) s += ",\"start_at\":" + JsonString(*start);
    if (!end->empty()) s += ",\"end_at\":" + JsonString(*end);
    if (!sched_name->empty()) s += ",\"name\":" + JsonString(*sched_name);
    s += RunFields(*run);
    std::exit(
        Print(Call(c, "POST", Base(c) + "/schedules", "{\"schedules\":[" + s + "}]}"), f->json,
              [](const rapidjson::Document& d) { std::printf("%s\n", FirstId(d, "schedules")); }));
  });

  sched->add_subcommand("ls", "List schedules")->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    ListAll(c, Base(c) + "/schedules", "schedules", f->json, [](const rapidjson::Value& s) {
      std::string next = TimeOf(s, "next_start");  // none: it will not run again
      if (next.empty()) next = "-";
      std::printf("%s  %-9s  %s  next %s  runs %ld\n", Str(s, "id"), Str(s, "status"),
                  Str(s, "code_name"), next.c_str(), static_cast<long>(Int(s, "run_count")));
    });
  });

  auto id = std::make_shared<std::string>();
  auto* info = sched->add_subcommand("info", "Show a schedule");
  info->add_option("id", *id, "Schedule id")->required()->check(kNonEmpty);
  info->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    std::exit(Print(Call(c, "GET", Base(c) + "/schedules/" + Escape(*id)), f->json,
                    [](const rapidjson::Document& s) {
                      std::printf("id          %s\n", Str(s, "id"));
                      std::printf("code        %s\n", Str(s, "code_name"));
                      if (*Str(s, "name")) std::printf("name        %s\n", Str(s, "name"));
                      std::printf("status      %s\n", Str(s, "status"));
                      if (*Str(s, "cron"))
                        std::printf("cron        %s %s\n", Str(s, "cron"), Str(s, "time_zone"));
                      if (Int(s, "run_every"))
                        std::printf("run_every   %ld s\n", static_cast<long>(Int(s, "run_every")));
                      if (Int(s, "run_times"))
                        std::printf("run_times   %ld\n", static_cast<long>(Int(s, "run_times")));
                      std::printf("run_count   %ld\n", static_cast<long>(Int(s, "run_count")));
                      std::string next = TimeOf(s, "next_start");
                      std::printf("next_start  %s\n", next.empty() ? "-" : next.c_str());
                      for (auto [k, shown] :
                           {std::pair{"last_run_time", "last_run"},
                            std::pair{"start_at", "start_at"}, std::pair{"end_at", "end_at"}})
                        if (auto at = TimeOf(s, k); !at.empty())
                          std::printf("%-11s %s\n", shown, at.c_str());
                      if (Int(s, "error_count"))
                        std::printf("errors      %ld\n", static_cast<long>(Int(s, "error_count")));
                      if (*Str(s, "msg")) std::printf("msg         %s\n", Str(s, "msg"));
                      std::printf("payload     %s\n", Str(s, "payload"));
                    }));
  });

  auto* cancel = sched->add_subcommand("cancel", "Cancel a schedule");
  cancel->add_option("id", *id, "Schedule id")->required()->check(kNonEmpty);
  cancel->callback([=] {
    auto c = Resolve(f->conn, Product::kWorker);
    std::exit(Print(Call(c, "POST", Base(c) + "/schedules/" + Escape(*id) + "/cancel"), f->json,
                    [](const rapidjson::Document& d) { std::printf("%s\n", Str(d, "msg")); }));
  });
}

}  // namespace

void AddWorkerCommands(CLI::App& app) {
  AddWorker(app);
  AddTask(app);
  AddSchedule(app);
}

}  // namespace kiln::cli
