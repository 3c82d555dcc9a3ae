// IronWorker v2 endpoints served so far (iron-api.md §3): image codes,
// tasks, their logs and cancel. Single objects are bare, lists wrapped.

#include "api/api.h"
#include "api/auth.h"
#include "api/errors.h"
#include "api/handler.h"
#include "api/json.h"
#include "api/multipart.h"
#include "base/time_format.h"

namespace kiln::api {
namespace {

using boost::asio::awaitable;
using http::Request;
using http::Response;

void WriteCode(JsonWriter& w, const worker::Code& c) {
  w.StartObject();
  w.Key("id");
  WriteString(w, c.id);
  w.Key("project_id");
  WriteString(w, c.project_id);
  w.Key("name");
  WriteString(w, c.name);
  w.Key("rev");
  w.Int64(c.rev);
  w.Key("image");
  WriteString(w, c.image);
  w.Key("command");
  WriteString(w, c.command);
  w.Key("max_concurrency");
  w.Int64(c.max_concurrency);
  w.Key("config");
  WriteString(w, c.config);
  w.Key("env_vars");
  w.StartObject();
  for (const auto& [k, v] : c.env_vars) {
    WriteString(w, k);
    WriteString(w, v);
  }
  w.EndObject();
  w.Key("created_at");
  WriteString(w, FormatRfc3339(c.created_at));
  w.EndObject();
}

void WriteTask(JsonWriter& w, const worker::Task& t) {
  w.StartObject();
  for (auto [k, v] : {std::pair{"id", &t.id}, std::pair{"project_id", &t.project_id},
                      std::pair{"code_id", &t.code_id}, std::pair{"code_history_id", &t.code_id},
                      std::pair{"code_name", &t.code_name}, std::pair{"msg", &t.msg},
                      std::pair{"payload", &t.payload}, std::pair{"label", &t.label},
                      std::pair{"cluster", &t.cluster}}) {
    w.Key(k);
    WriteString(w, *v);
  }
  w.Key("code_rev");
  WriteString(w, std::to_string(t.code_rev));
  w.Key("status");
  w.String(worker::StateName(t.state));
  w.Key("priority");
  w.Int(t.priority);
  w.Key("timeout");
  w.Int64(t.timeout);
  w.Key("delay");
  w.Int64(std::max<int64_t>(0, (t.run_after - t.created_at) / 1000));
  if (t.exit_code >= 0) {
    w.Key("exit_code");
    w.Int(t.exit_code);
  }
  w.Key("created_at");
  WriteString(w, FormatRfc3339(t.created_at));
  w.Key("updated_at");
  WriteString(w, FormatRfc3339(t.updated_at));
  if (t.start_time) {
    w.Key("start_time");
    WriteString(w, FormatRfc3339(t.start_time));
  }
  if (t.end_time) {
    w.Key("end_time");
    WriteString(w, FormatRfc3339(t.end_time));
    if (t.start_time) {
      w.Key("duration");
      w.Int64(t.end_time - t.start_time);
    }
  }
  w.EndObject();
}

}  // namespace

void AddWorkerRoutes(http::Router& router, const Services& s) {
  if (!s.worker) return;
  const std::string base = "/2/projects/:project";

  // C1: register an image code (multipart "data"). Zip codes come later.
  router.Add("POST", base + "/codes", [s](Request& req) -> awaitable<Response> {
    KILN_AUTH(*s.access, req, project);
    KILN_TRY(parts, ParseMultipart(req.Header("content-type"), req.body));
    auto data = parts->find("data");
    if (data == parts->end())
      co_return ErrorResponse(Error::InvalidArgument("the data part is required"));
    if (parts->count("file"))
      co_return ErrorResponse(Error::InvalidArgument(
          "zip code packages are not supported yet: register an image with image and command"));
    KILN_TRY(doc, ParseObject(data->second));
    worker::Code c;
    KILN_TRY(name, GetString(*doc, "name"));
    KILN_TRY(image, GetString(*doc, "image"));
    KILN_TRY(command, GetString(*doc, "command"));
    KILN_TRY(config, GetString(*doc, "config"));
    KILN_TRY(maxc, GetInt(*doc, "max_concurrency"));
    KILN_TRY(env, GetObject(*doc, "env_vars"));
    c.name = name->value_or("");
    c.image = image->value_or("");
    c.command = command->value_or("");
    c.config = config->value_or("");
    c.max_concurrency = maxc->value_or(0);
    if (*env)
      for (const auto& m : (*env)->GetObject())
        if (m.value.IsString()) c.env_vars.emplace_back(m.name.GetString(), m.value.GetString());
    KILN_TRY(code, s.worker->PutCode(project, c));
    co_return Response{200, Json([&](JsonWriter& w) {
                         w.StartObject();
                         w.Key("id");
                         WriteString(w, code->id);
                         w.Key("msg");
                         w.String("Upload successful.");
                         w.EndObject();
                       })};
  });

  router.Add("GET", base + "/codes/:code", [s](Request& req) -> awaitable<Response> {
    KILN_AUTH(*s.access, req, project);
    KILN_TRY(code, s.worker->GetCode(project, std::string(req.Param("code"))));
    co_return Response{200, Json([&](JsonWriter& w) { WriteCode(w, *code); })};
  });

  // T1: queue tasks.
  router.Add("POST", base + "/tasks", [s](Request& req) -> awaitable<Response> {
    KILN_AUTH(*s.access, req, project);
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(arr, GetArray(*doc, "tasks"));
    if (!*arr || (*arr)->Empty())
      co_return ErrorResponse(Error::InvalidArgument("tasks must be a non-empty array"));
    std::vector<worker::NewTask> tasks;
    for (const auto& o : (*arr)->GetArray()) {
      if (!o.IsObject())
        co_return ErrorResponse(Error::InvalidArgument("each task must be an object"));
      worker::NewTask n;
      KILN_TRY(code, GetString(o, "code_name"));
      if (!*code) co_return ErrorResponse(Error::InvalidArgument("code_name is required"));
      KILN_TRY(payload, GetString(o, "payload"));
      KILN_TRY(priority, GetInt(o, "priority"));
      KILN_TRY(timeout, GetInt(o, "timeout"));
      KILN_TRY(delay, GetInt(o, "delay"));
      KILN_TRY(label, GetString(o, "label"));
      KILN_TRY(cluster, GetString(o, "cluster"));
      n.code_name = **code;
      n.payload = payload->value_or("");
      int64_t p = priority->value_or(0);
      n.priority = p >= 0 && p <= 2 ? static_cast<int>(p) : 0;  // Go sends -3: the default
      int64_t t = timeout->value_or(3600);
      n.timeout = t == 0 ? 3600 : t;  // Go and ironcli send 0 for the maximum
      n.delay = delay->value_or(0);
      n.label = label->value_or("");
      n.cluster = cluster->value_or("").empty() ? "default" : **cluster;
      tasks.push_back(std::move(n));
    }
    KILN_TRY(ids, s.worker->QueueTasks(project, tasks));
    co_return Response{200, Json([&](JsonWriter& w) {
                         w.StartObject();
                         w.Key("msg");
                         w.String("Queued up");
                         w.Key("tasks");
                         w.StartArray();
                         for (const auto& id : *ids) {
                           w.StartObject();
                           w.Key("id");
                           WriteString(w, id);
                           w.EndObject();
                         }
                         w.EndArray();
                         w.EndObject();
                       })};
  });

  router.Add("GET", base + "/tasks/:task", [s](Request& req) -> awaitable<Response> {
    KILN_AUTH(*s.access, req, project);
    KILN_TRY(task, s.worker->GetTask(project, std::string(req.Param("task"))));
    co_return Response{200, Json([&](JsonWriter& w) { WriteTask(w, *task); })};
  });

  router.Add("GET", base + "/tasks/:task/log", [s](Request& req) -> awaitable<Response> {
    KILN_AUTH(*s.access, req, project);
    KILN_TRY(log, s.worker->Log(project, std::string(req.Param("task"))));
    Response r{200, std::move(*log)};
    r.content_type = "text/plain";
    co_return r;
  });

  router.Add("POST", base + "/tasks/:task/cancel", [s](Request& req) -> awaitable<Response> {
    KILN_AUTH(*s.access, req, project);
    KILN_TRY(r, s.worker->Cancel(project, std::string(req.Param("task"))));
    co_return Response{200, MsgJson("Cancelled")};
  });
}

}  // namespace kiln::api
