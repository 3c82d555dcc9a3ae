// IronWorker v2 endpoints (iron-api.md §3): codes and revisions, tasks,
// logs, progress, retries, webhooks and schedules. Single objects are bare,
// lists wrapped. Everything is done by worker::Service.

#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <memory>
#include <set>

#include "api/api.h"
#include "api/auth.h"
#include "api/blocking.h"
#include "api/errors.h"
#include "api/handler.h"
#include "api/json.h"
#include "api/multipart.h"
#include "api/upload_slots.h"
#include "base/check.h"
#include "base/ids.h"
#include "base/time_format.h"
#include "base/url.h"

namespace kiln::api {
namespace {

using boost::asio::awaitable;
using http::Request;
using http::Response;

void Str(JsonWriter& w, const char* key, std::string_view v) {
  w.Key(key);
  WriteString(w, v);
}
void Int(JsonWriter& w, const char* key, int64_t v) {
  w.Key(key);
  w.Int64(v);
}
// Go decodes times as RFC 3339; an unset one is the zero time (§3.4).
void Time(JsonWriter& w, const char* key, TimeMs t) {
  Str(w, key, t ? FormatRfc3339(t) : "0001-01-01T00:00:00Z");
}

void WriteCode(JsonWriter& w, const worker::Code& c) {
  w.StartObject();
  Str(w, "id", c.id);
  Str(w, "project_id", c.project_id);
  Str(w, "name", c.name);
  Int(w, "rev", c.rev);
  Str(w, "latest_history_id", c.history_id);
  Str(w, "latest_change", FormatRfc3339(c.updated_at));
  if (!c.image.empty()) Str(w, "image", c.image);
  if (!c.command.empty()) Str(w, "command", c.command);
  if (!c.runtime.empty()) Str(w, "runtime", c.runtime);
  if (!c.file_name.empty()) Str(w, "file_name", c.file_name);
  if (!c.stack.empty()) Str(w, "stack", c.stack);
  if (!c.checksum.empty()) Str(w, "latest_checksum", c.checksum);
  Int(w, "max_concurrency", c.max_concurrency);
  Int(w, "retries", c.retries);
  Int(w, "retries_delay", c.retries_delay);
  Int(w, "default_priority", c.default_priority);
  Int(w, "memory", c.memory_mb);
  Int(w, "disk", c.disk_mb);
  Str(w, "network", c.network ? "host" : "none");  // as uploaded
  Str(w, "config", c.config);
  w.Key("env_vars");
  w.StartObject();
  for (const auto& [k, v] : c.env_vars) {
    WriteString(w, k);
    WriteString(w, v);
  }
  w.EndObject();
  Str(w, "status", c.paused ? "paused" : "active");
  Str(w, "created_at", FormatRfc3339(c.created_at));
  w.EndObject();
}

void WriteRevision(JsonWriter& w, const worker::Code& c) {
  w.StartObject();
  Str(w, "id", c.history_id);
  Str(w, "code_id", c.id);
  Str(w, "project_id", c.project_id);
  Str(w, "name", c.name);
  Int(w, "rev", c.rev);
  Str(w, "created_at", FormatRfc3339(c.updated_at));
  Str(w, "image", c.image);
  Str(w, "command", c.command);
  Str(w, "file_name", c.file_name);
  Str(w, "runtime", c.runtime);
  Str(w, "stack", c.stack);
  Str(w, "checksum", c.checksum);
  Int(w, "code_size", c.code_size);
  Str(w, "config", c.config);
  w.EndObject();
}

void WriteTask(JsonWriter& w, const worker::Task& t) {
  w.StartObject();
  Str(w, "id", t.id);
  Str(w, "project_id", t.project_id);
  Str(w, "code_id", t.code_id);
  Str(w, "code_history_id", t.code_history_id);
  Str(w, "code_name", t.code_name);
  Str(w, "code_rev", std::to_string(t.code_rev));
  Str(w, "status", worker::StateName(t.state));
  Str(w, "msg", t.msg);
  Int(w, "priority", t.priority);
  Int(w, "timeout", t.timeout);
  Int(w, "delay", std::max<int64_t>(0, (t.run_after - t.created_at) / 1000));
  Str(w, "cluster", t.cluster);
  Str(w, "label", t.label);
  Str(w, "payload", t.payload);
  Int(w, "percent", t.percent);
  Int(w, "retry_count", t.retry_count);
  if (!t.original_task_id.empty()) Str(w, "original_task_id", t.original_task_id);
  if (!t.schedule_id.empty()) Str(w, "schedule_id", t.schedule_id);
  if (t.exit_code >= 0) Int(w, "exit_code", t.exit_code);
  Int(w, "log_size", t.log_size);
  Int(w, "run_times", t.start_time ? 1 : 0);
  Str(w, "created_at", FormatRfc3339(t.created_at));
  Str(w, "updated_at", FormatRfc3339(t.updated_at));
  if (t.start_time) Str(w, "start_time", FormatRfc3339(t.start_time));
  if (t.end_time) {
    Str(w, "end_time", FormatRfc3339(t.end_time));
    if (t.start_time) Int(w, "duration", t.end_time - t.start_time);
  }
  w.EndObject();
}

void WriteSchedule(JsonWriter& w, const worker::Schedule& s) {
  w.StartObject();
  Str(w, "id", s.id);
  Str(w, "project_id", s.project_id);
  Str(w, "code_name", s.code_name);
  if (!s.name.empty()) Str(w, "name", s.name);
  Str(w, "payload", s.payload);
  Str(w, "status", s.status);
  Str(w, "msg", s.msg);
  Time(w, "start_at", s.start_at);
  Time(w, "end_at", s.end_at);
  Time(w, "next_start", s.next_start);
  Time(w, "last_run_time", s.last_run_time);
  if (s.run_every) Int(w, "run_every", s.run_every);
  if (s.run_times) Int(w, "run_times", s.run_times);
  if (!s.cron.empty()) Str(w, "cron", s.cron);
  if (!s.time_zone.empty()) Str(w, "time_zone", s.time_zone);
  Int(w, "run_count", s.run_count);
  if (s.priority) Int(w, "priority", *s.priority);  // none: the code's default_priority
  Int(w, "timeout", s.timeout);
  Int(w, "task_delay", s.task_delay);
  Str(w, "cluster", s.cluster);
  Str(w, "label", s.label);
  Int(w, "error_count", s.error_count);
  if (s.max_concurrency) Int(w, "max_concurrency", s.max_concurrency);
  Str(w, "created_at", FormatRfc3339(s.created_at));
  Str(w, "updated_at", FormatRfc3339(s.updated_at));
  w.EndObject();
}

// {"msg": msg, "<key>": [{"id": ...}, ...]}
std::string IdsJson(const char* msg, const char* key, const std::vector<std::string>& ids) {
  return Json([&](JsonWriter& w) {
    w.StartObject();
    Str(w, "msg", msg);
    w.Key(key);
    w.StartArray();
    for (const auto& id : ids) {
      w.StartObject();
      Str(w, "id", id);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  });
}

template <typename T, typename F>
std::string ListJson(const char* key, const std::vector<T>& items, F write) {
  return Json([&](JsonWriter& w) {
    w.StartObject();
    w.Key(key);
    w.StartArray();
    for (const auto& x : items) write(w, x);
    w.EndArray();
    w.EndObject();
  });
}

struct Paging {
  int page = 0, per_page = 30;
};
// page (0-based, at most 100) and per_page (1-100, default 30), §1.5.
Result<Paging> GetPaging(const Request& req) {
  Paging p;  // an empty value is no value, as for every optional parameter
  if (auto v = req.Query("page"); v && !v->empty()) {
    auto n = ParseIntParam("page", *v);
    if (!n) return Fail(n.error());
    if (*n < 0 || *n > 100) return Fail(Error::InvalidArgument("page must be between 0 and 100"));
    p.page = static_cast<int>(*n);
  }
  if (auto v = req.Query("per_page"); v && !v->empty()) {
    auto n = ParseIntParam("per_page", *v);
    if (!n) return Fail(n.error());
    if (*n < 1 || *n > 100)
      return Fail(Error::InvalidArgument("per_page must be between 1 and 100"));
    p.per_page = static_cast<int>(*n);
  }
  return p;
}

// Unix seconds as Kiln's milliseconds; out of range before 1970 or from
// the year 10000 (where the milliseconds would soon overflow).
Result<TimeMs> UnixSecondsToMs(const char* key, double s) {
  constexpr double kMaxUnixSeconds = 253402300800;
  if (!(s >= 0 && s < kMaxUnixSeconds))
    return Fail(Error::InvalidArgument(std::string(key) + " is out of range"));
  return static_cast<TimeMs>(s * 1000);
}

// A time given as RFC 3339 text or unix seconds; 0 when absent.
Result<TimeMs> GetTime(const JsonValue& o, const char* key) {
  auto it = o.FindMember(key);
  if (it == o.MemberEnd() || it->value.IsNull()) return 0;
  if (it->value.IsString()) {
    auto t = ParseRfc3339(it->value.GetString());
    if (!t) return Fail(Error::InvalidArgument(std::string(key) + " must be an RFC 3339 time"));
    // Before 1970 is Go's zero time ("0001-01-01T00:00:00Z", what Kiln sends
    // for an unset time and clients send back): unset.
    if (*t <= 0) return 0;
    if (*t >= TimeMs{253402300800} * 1000)
      return Fail(Error::InvalidArgument(std::string(key) + " is out of range"));
    return *t;
  }
  if (it->value.IsNumber()) return UnixSecondsToMs(key, it->value.GetDouble());
  return Fail(Error::InvalidArgument(std::string(key) + " must be an RFC 3339 time"));
}

// A payload as the clients send it: a string; an object is kept as its JSON.
Result<std::string> GetPayload(const JsonValue& o) {
  auto it = o.FindMember("payload");
  if (it == o.MemberEnd() || it->value.IsNull()) return std::string();
  if (it->value.IsString()) return std::string(it->value.GetString(), it->value.GetStringLength());
  if (it->value.IsObject() || it->value.IsArray()) {
    if (!NestsWithin(it->value, kMaxJsonDepth))
      return Fail(Error::InvalidArgument("payload nests deeper than " +
                                         std::to_string(kMaxJsonDepth) + " levels"));
    return Json([&](JsonWriter& w) { it->value.Accept(w); });
  }
  return Fail(Error::InvalidArgument("payload must be a string"));
}

// The code settings of an upload's data part.
Result<worker::Code> CodeFromData(const std::string& data) {
  auto doc = ParseObject(data);
  if (!doc) return Fail(doc.error());
  worker::Code c;
  for (auto [key, field] :
       {std::pair{"name", &worker::Code::name}, std::pair{"image", &worker::Code::image},
        std::pair{"command", &worker::Code::command}, std::pair{"runtime", &worker::Code::runtime},
        std::pair{"file_name", &worker::Code::file_name}, std::pair{"stack", &worker::Code::stack},
        std::pair{"config", &worker::Code::config}}) {
    auto v = GetString(*doc, key);
    if (!v) return Fail(v.error());
    c.*field = v->value_or("");
  }
  for (auto [key, field] :
       {std::pair{"max_concurrency", &worker::Code::max_concurrency},
        std::pair{"retries", &worker::Code::retries},
        std::pair{"retries_delay", &worker::Code::retries_delay},
        std::pair{"memory", &worker::Code::memory_mb}, std::pair{"disk", &worker::Code::disk_mb}}) {
    auto v = GetInt(*doc, key);
    if (!v) return Fail(v.error());
    if (*v) c.*field = **v;
  }
  auto prio = GetInt(*doc, "default_priority");
  if (!prio) return Fail(prio.error());
  auto default_priority = NarrowInt("default_priority", prio->value_or(0));
  if (!default_priority) return Fail(default_priority.error());
  c.default_priority = *default_priority;
  if (c.max_concurrency == -1) c.max_concurrency = 0;  // Go sends -1 for "no limit"
  auto net = GetString(*doc, "network");
  if (!net) return Fail(net.error());
  if (*net && **net != "none" && **net != "host")
    return Fail(Error::InvalidArgument("network must be none or host"));
  c.network = *net && **net == "host";
  auto env = GetObject(*doc, "env_vars");
  if (!env) return Fail(env.error());
  if (*env) {
    if (!(*env)->IsObject()) return Fail(Error::InvalidArgument("env_vars must be an object"));
    for (const auto& m : (*env)->GetObject()) {
      if (!m.value.IsString())
        return Fail(Error::InvalidArgument("env_vars values must be strings"));
      c.env_vars.emplace_back(std::string(m.name.GetString(), m.name.GetStringLength()),
                              std::string(m.value.GetString(), m.value.GetStringLength()));
    }
  }
  return c;
}

// One task of POST /tasks (or the query of the webhook, as strings).
Result<worker::NewTask> TaskFromJson(const JsonValue& o) {
  worker::NewTask n;
  auto code = GetString(o, "code_name");
  if (!code) return Fail(code.error());
  if (!*code || (*code)->empty()) return Fail(Error::InvalidArgument("code_name is required"));
  n.code_name = **code;
  auto payload = GetPayload(o);
  if (!payload) return Fail(payload.error());
  n.payload = std::move(*payload);
  auto priority = GetInt(o, "priority");
  auto timeout = GetInt(o, "timeout");
  auto delay = GetInt(o, "delay");
  auto label = GetString(o, "label");
  auto cluster = GetString(o, "cluster");
  auto sync = GetBool(o, "sync");
  for (const auto* r : {&priority, &timeout, &delay})
    if (!*r) return Fail(r->error());
  for (const auto* r : {&label, &cluster})
    if (!*r) return Fail(r->error());
  if (!sync) return Fail(sync.error());
  // Go and ironcli send -3 for "the code's default" (§3.3), and any
  // negative value means it too; past 2 is refused by the service.
  if (*priority && **priority >= 0) {
    auto p = NarrowInt("priority", **priority);
    if (!p) return Fail(p.error());
    n.priority = *p;
  }
  int64_t t = timeout->value_or(3600);
  n.timeout = t == 0 ? 3600 : t;  // Go and ironcli send 0 for the maximum
  n.delay = delay->value_or(0);
  n.label = label->value_or("");
  n.cluster = cluster->value_or("");
  n.sync = sync->value_or(false);
  return n;
}

Result<worker::Schedule> ScheduleFromJson(const JsonValue& o, worker::Schedule s) {
  for (auto [key, field] :
       {std::pair{"code_name", &worker::Schedule::code_name},
        std::pair{"name", &worker::Schedule::name},
        std::pair{"cluster", &worker::Schedule::cluster},
        std::pair{"label", &worker::Schedule::label}, std::pair{"cron", &worker::Schedule::cron},
        std::pair{"time_zone", &worker::Schedule::time_zone}}) {
    auto v = GetString(o, key);
    if (!v) return Fail(v.error());
    if (*v) s.*field = **v;
  }
  if (s.cluster.empty()) s.cluster = "default";
  if (o.HasMember("payload")) {
    auto p = GetPayload(o);
    if (!p) return Fail(p.error());
    s.payload = std::move(*p);
  }
  for (auto [key, field] : {std::pair{"run_every", &worker::Schedule::run_every},
                            std::pair{"run_times", &worker::Schedule::run_times},
                            std::pair{"timeout", &worker::Schedule::timeout},
                            std::pair{"delay", &worker::Schedule::task_delay},
                            // as GET shows it: a read-modify-write keeps it
                            std::pair{"task_delay", &worker::Schedule::task_delay},
                            std::pair{"max_concurrency", &worker::Schedule::max_concurrency}}) {
    auto v = GetInt(o, key);
    if (!v) return Fail(v.error());
    if (*v) s.*field = **v;
  }
  if (s.timeout == 0) s.timeout = 3600;
  auto prio = GetInt(o, "priority");
  if (!prio) return Fail(prio.error());
  if (*prio && **prio < 0) {
    s.priority.reset();  // as for tasks (§3.3): the code's default_priority
  } else if (*prio) {
    auto p = NarrowInt("priority", **prio);
    if (!p) return Fail(p.error());
    s.priority = *p;
  }
  for (auto [key, field] : {std::pair{"start_at", &worker::Schedule::start_at},
                            std::pair{"end_at", &worker::Schedule::end_at}}) {
    if (!o.HasMember(key)) continue;
    auto t = GetTime(o, key);
    if (!t) return Fail(t.error());
    s.*field = *t;
  }
  return s;
}

}  // namespace

void AddWorkerRoutes(http::Router& router, const Services& s) {
  if (!s.worker) return;
  worker::Service* svc = s.worker;
  access::Access* acc = s.access;
  const std::string base = "/2/projects/:project";
  KILN_CHECK(s.disk && s.uploads, "worker routes need threads for their disk work");
  boost::asio::thread_pool* disk = s.disk;        // reads
  boost::asio::thread_pool* uploads = s.uploads;  // code packages are written there

  // Any valid token: the names are the server's, not a project's.
  router.Add("GET", "/2/stacks", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_TRY(who, acc->Authenticate(TokenOf(req)));
    auto names = svc->Stacks();
    co_return Response{200, Json([&](JsonWriter& w) {
                         w.StartArray();
                         for (const auto& n : names) WriteString(w, n);
                         w.EndArray();
                       })};
  });

  // ---- Codes ----

  // C1: a new code or revision: multipart with "data" and an optional zip "file".
  // The package (up to 64 MB) is parsed, written and fsync'd off the io thread.
  KILN_CHECK(s.upload_slots, "worker routes need the upload slots");
  UploadSlots* slots = s.upload_slots;
  router.Add("POST", base + "/codes",
             [svc, acc, uploads, slots](Request& req) -> awaitable<Response> {
               KILN_AUTH(*acc, req, project);
               // Taken at the head, before the body came (req.admission), or now.
               std::unique_ptr<UploadSlots::Held> slot;
               if (!req.admission) {
                 auto taken = slots->Take(project);
                 if (!taken) co_return ErrorResponse(taken.error());
                 slot = std::move(*taken);
               }
               KILN_TRY(code, co_await OffIoThread(*uploads, [&]() -> Result<worker::Code> {
                          auto parts = ParseMultipart(req.Header("content-type"), req.body);
                          if (!parts) return Fail(parts.error());
                          auto data = parts->find("data");
                          if (data == parts->end())
                            return Fail(Error::InvalidArgument("the data part is required"));
                          auto spec = CodeFromData(data->second);
                          if (!spec) return Fail(spec.error());
                          auto file = parts->find("file");
                          return svc->PutCode(project, std::move(*spec),
                                              file == parts->end() ? std::string() : file->second);
                        }));
               co_return Response{200, Json([&](JsonWriter& w) {
                                    w.StartObject();
                                    Str(w, "id", code->id);
                                    Int(w, "rev", code->rev);
                                    Str(w, "msg", "Upload successful.");
                                    w.EndObject();
                                  })};
             });

  router.Add("GET", base + "/codes", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    KILN_TRY(p, GetPaging(req));
    co_return Response{200,
                       ListJson("codes", svc->ListCodes(project, p->page, p->per_page), WriteCode)};
  });

  router.Add("GET", base + "/codes/:code", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    KILN_TRY(code, svc->GetCode(project, std::string(req.Param("code"))));
    co_return Response{200, Json([&](JsonWriter& w) { WriteCode(w, *code); })};
  });

  router.Add("DELETE", base + "/codes/:code", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    KILN_TRY(r, svc->DeleteCode(project, std::string(req.Param("code"))));
    co_return Response{200, MsgJson("Deleted")};
  });

  router.Add(
      "GET", base + "/codes/:code/revisions", [svc, acc](Request& req) -> awaitable<Response> {
        KILN_AUTH(*acc, req, project);
        KILN_TRY(p, GetPaging(req));
        KILN_TRY(revs,
                 svc->Revisions(project, std::string(req.Param("code")), p->page, p->per_page));
        co_return Response{200, ListJson("revisions", *revs, WriteRevision)};
      });

  router.Add(
      "GET", base + "/codes/:code/download", [svc, acc, disk](Request& req) -> awaitable<Response> {
        KILN_AUTH(*acc, req, project);
        int64_t rev = 0;
        if (auto v = req.Query("revision"); v && !v->empty()) {
          KILN_TRY(n, ParseIntParam("revision", *v));
          if (*n < 1) co_return ErrorResponse(Error::InvalidArgument("revision must be 1 or more"));
          rev = *n;
        }
        std::string code(req.Param("code"));
        KILN_TRY(zip,
                 co_await OffIoThread(*disk, [&] { return svc->Download(project, code, rev); }));
        Response r{200};
        r.file = std::move(zip->second);  // sent from the file: it may be large
        r.content_type = "application/zip";
        // Quoted, with the exact name in RFC 5987 form beside a plain one.
        std::string plain = zip->first;
        for (char& c : plain)
          if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f ||
              c == '"' || c == '\\')
            c = '_';
        r.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + plain +
                                                          "\"; filename*=UTF-8''" +
                                                          PercentEncode(zip->first));
        co_return r;
      });

  router.Add("GET", base + "/codes/:code/stats", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    TimeMs to = SystemClock::Get()->NowMs(), from = to - 24 * 3600 * 1000;
    for (auto [key, field] : {std::pair{"start_date", &from}, std::pair{"end_date", &to}}) {
      if (auto v = req.Query(key); v && !v->empty()) {
        KILN_TRY(n, ParseIntParam(key, *v));
        KILN_TRY(ms, UnixSecondsToMs(key, static_cast<double>(*n)));
        *field = field == &to ? *ms + 999 : *ms;  // end_date: its whole second, as to_time
      }
    }
    if (from > to)  // an empty span, surely a mistake: not an answer of zeros
      co_return ErrorResponse(Error::InvalidArgument("start_date is after end_date"));
    KILN_TRY(st, svc->Stats(project, std::string(req.Param("code")), from, to));
    co_return Response{200, Json([&](JsonWriter& w) {
                         w.StartObject();
                         for (int i = 0; i < static_cast<int>(st->size()); ++i)
                           Int(w, worker::StateName(static_cast<worker::TaskState>(i)),
                               (*st)[static_cast<size_t>(i)]);
                         w.EndObject();
                       })};
  });

  for (auto [path, paused, msg] : {std::tuple{"/pause_task_queue", true, "Paused"},
                                   std::tuple{"/resume_task_queue", false, "Resumed"}}) {
    router.Add("POST", base + "/codes/:code" + path,
               [svc, acc, paused, msg](Request& req) -> awaitable<Response> {
                 KILN_AUTH(*acc, req, project);
                 KILN_TRY(r, svc->SetPaused(project, std::string(req.Param("code")), paused));
                 co_return Response{200, MsgJson(msg)};
               });
  }

  router.Add("POST", base + "/codes/:code/cancel_all",
             [svc, acc](Request& req) -> awaitable<Response> {
               KILN_AUTH(*acc, req, project);
               KILN_TRY(n, svc->CancelAll(project, std::string(req.Param("code"))));
               co_return Response{200, Json([&](JsonWriter& w) {
                                    w.StartObject();
                                    Str(w, "msg", "Cancelled");
                                    Int(w, "cancelled", *n);
                                    w.EndObject();
                                  })};
             });

  // ---- Tasks ----

  router.Add("POST", base + "/tasks", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(arr, GetArray(*doc, "tasks"));
    if (!*arr || !(*arr)->IsArray() || (*arr)->Empty())
      co_return ErrorResponse(Error::InvalidArgument("tasks must be a non-empty array"));
    if ((*arr)->Size() > 100)
      co_return ErrorResponse(Error::InvalidArgument("at most 100 tasks per request"));
    std::vector<worker::NewTask> tasks;
    for (const auto& o : (*arr)->GetArray()) {
      if (!o.IsObject())
        co_return ErrorResponse(Error::InvalidArgument("each task must be an object"));
      KILN_TRY(n, TaskFromJson(o));
      tasks.push_back(std::move(*n));
    }
    KILN_TRY(ids, svc->QueueTasks(project, tasks));
    co_return Response{200, IdsJson("Queued up", "tasks", *ids)};
  });

  // T9: the raw body of any type becomes the payload.
  router.Add("POST", base + "/tasks/webhook", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    worker::NewTask n;
    if (auto v = req.Query("code_name")) n.code_name = *v;
    if (n.code_name.empty())
      co_return ErrorResponse(Error::InvalidArgument("code_name is required"));
    n.payload = req.body;
    if (auto v = req.Query("cluster")) n.cluster = *v;
    if (auto v = req.Query("label")) n.label = *v;
    for (auto [key, field] : {std::pair{"timeout", &n.timeout}, std::pair{"delay", &n.delay}}) {
      if (auto v = req.Query(key); v && !v->empty()) {
        KILN_TRY(x, ParseIntParam(key, *v));
        *field = *x;
      }
    }
    if (n.timeout == 0) n.timeout = 3600;  // as in POST /tasks: 0 means the maximum
    if (auto v = req.Query("priority"); v && !v->empty()) {
      KILN_TRY(x, ParseIntParam("priority", *v));
      if (*x >= 0) {  // negative (Go's -3): the code's default, as in POST /tasks
        KILN_TRY(p, NarrowInt("priority", *x));
        n.priority = *p;
      }
    }
    KILN_TRY(ids, svc->QueueTasks(project, {n}));
    co_return Response{200, Json([&](JsonWriter& w) {
                         w.StartObject();
                         Str(w, "id", ids->at(0));
                         Str(w, "msg", "Queued up.");
                         w.EndObject();
                       })};
  });

  router.Add("GET", base + "/tasks", [svc, acc, disk](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    KILN_TRY(p, GetPaging(req));
    worker::TaskFilter f;
    f.page = p->page;
    f.per_page = p->per_page;
    for (auto [key, field] : {std::pair{"code_name", &f.code_name}, std::pair{"label", &f.label},
                              std::pair{"cluster", &f.cluster}})
      if (auto v = req.Query(key)) *field = *v;
    // Status filters are OR'ed; Go sends "%!d(bool=true)" for true (§3.3).
    for (const char* st :
         {"queued", "preparing", "running", "complete", "error", "cancelled", "killed", "timeout"})
      if (auto v = req.Query(st); v && !v->empty() && *v != "0" && *v != "false")
        f.states.insert(*worker::StateFromName(st));
    for (auto [key, field] : {std::pair{"from_time", &f.from}, std::pair{"to_time", &f.to}}) {
      if (auto v = req.Query(key); v && !v->empty()) {
        KILN_TRY(n, ParseIntParam(key, *v));
        KILN_TRY(ms, UnixSecondsToMs(key, static_cast<double>(*n)));
        // Times are shown to the second: to_time takes in the whole second
        // it names, so "up to this task's created_at" finds that task.
        *field = field == &f.to ? *ms + 999 : *ms;
      }
    }
    if (f.from && f.to && f.from > f.to)  // an empty span, surely a mistake
      co_return ErrorResponse(Error::InvalidArgument("from_time is after to_time"));
    // A page's payloads are read from the store: off the io thread.
    KILN_TRY(tasks, co_await OffIoThread(*disk, [&] { return svc->ListTasks(project, f); }));
    co_return Response{200, ListJson("tasks", *tasks, WriteTask)};
  });

  // Kiln extension: ?wait=N (up to 30 s) answers when the task finishes, or
  // after N seconds with the task as it is then; no polling needed.
  router.Add("GET", base + "/tasks/:task", [svc, acc, disk](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    std::string id(req.Param("task"));
    int64_t wait_s = 0;
    if (auto v = req.Query("wait"); v && !v->empty()) {
      KILN_TRY(n, ParseIntParam("wait", *v));
      if (*n < 0 || *n > 30)
        co_return ErrorResponse(Error::InvalidArgument("wait must be between 0 and 30"));
      wait_s = *n;
    }
    // The payload is read from the store: off the io thread.
    auto get = [&] { return OffIoThread(*disk, [&] { return svc->GetTask(project, id); }); };
    if (wait_s == 0) {
      KILN_TRY(task, co_await get());
      co_return Response{200, Json([&](JsonWriter& w) { WriteTask(w, *task); })};
    }
    auto ex = co_await boost::asio::this_coro::executor;
    auto timer = std::make_shared<boost::asio::steady_timer>(ex, std::chrono::seconds(wait_s));
    // The wake may come before the wait below starts (Watch runs on the
    // disk thread, and the task can end before this coroutine is back):
    // moving the expiry into the past, unlike a cancel, also ends a wait
    // that starts later.
    auto wake = std::make_shared<std::function<void()>>([timer, ex] {
      boost::asio::post(
          ex, [timer] { timer->expires_at(std::chrono::steady_clock::time_point::min()); });
    });
    KILN_TRY(task, co_await OffIoThread(*disk, [&] { return svc->Watch(project, id, wake); }));
    if (!worker::Final(task->state)) {
      boost::system::error_code ec;
      co_await timer->async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      svc->Unwatch(id, wake);
      KILN_TRY(now, co_await get());
      *task = std::move(*now);
    }
    co_return Response{200, Json([&](JsonWriter& w) { WriteTask(w, *task); })};
  });

  // T4, and T5 for tasksRun: the output is one stream (stdout and stderr).
  for (const char* path : {"/log", "/outlog"}) {
    bool outlog = std::string_view(path) == "/outlog";
    router.Add(
        "GET", base + "/tasks/:task" + path,
        [svc, acc, outlog, disk](Request& req) -> awaitable<Response> {
          KILN_AUTH(*acc, req, project);
          std::string id(req.Param("task"));
          if (outlog) {
            KILN_TRY(t, co_await OffIoThread(*disk, [&] { return svc->GetTask(project, id); }));
            if (!worker::Final(t->state))
              co_return ErrorResponse(Error::NotFound("Output log not ready"));
          }
          // Kiln: ?offset=N, the log from byte N on (kiln task log --follow).
          uint64_t offset = 0;
          if (auto v = req.Query("offset"); v && !ParseU64(*v, &offset))
            co_return ErrorResponse(
                Error::InvalidArgument("offset must be a non-negative integer"));
          // Up to the log cap (8 MiB), sent from the file (opened off the io
          // thread) as the client takes it.
          KILN_TRY(log, co_await OffIoThread(*disk, [&] { return svc->Log(project, id, offset); }));
          Response r{200};
          r.file = std::move(*log);
          r.content_type = "text/plain";
          co_return r;
        });
  }

  router.Add("POST", base + "/tasks/:task/cancel", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    KILN_TRY(r, svc->Cancel(project, std::string(req.Param("task"))));
    co_return Response{200, MsgJson("Cancelled")};
  });

  router.Add("POST", base + "/tasks/:task/retry", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(delay, GetInt(*doc, "delay"));
    KILN_TRY(id, svc->Retry(project, std::string(req.Param("task")), delay->value_or(0)));
    co_return Response{200, IdsJson("Queued up", "tasks", {*id})};
  });

  router.Add(
      "POST", base + "/tasks/:task/progress", [svc, acc](Request& req) -> awaitable<Response> {
        KILN_AUTH(*acc, req, project);
        KILN_TRY(doc, ParseObject(req.body));
        KILN_TRY(percent, GetInt(*doc, "percent"));
        KILN_TRY(msg, GetString(*doc, "msg"));
        // Only what is given changes: a msg alone keeps the percent.
        std::optional<int> p;
        if (*percent) {
          if (**percent < 0 || **percent > 100)
            co_return ErrorResponse(Error::InvalidArgument("percent must be between 0 and 100"));
          p = static_cast<int>(**percent);
        }
        KILN_TRY(r, svc->SetProgress(project, std::string(req.Param("task")), p, *msg));
        co_return Response{200, MsgJson("Progress set")};
      });

  // ---- Schedules ----

  router.Add("POST", base + "/schedules", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(arr, GetArray(*doc, "schedules"));
    if (!*arr || !(*arr)->IsArray() || (*arr)->Empty())
      co_return ErrorResponse(Error::InvalidArgument("schedules must be a non-empty array"));
    std::vector<worker::Schedule> specs;
    for (const auto& o : (*arr)->GetArray()) {
      if (!o.IsObject())
        co_return ErrorResponse(Error::InvalidArgument("each schedule must be an object"));
      KILN_TRY(sc, ScheduleFromJson(o, worker::Schedule{}));
      specs.push_back(std::move(*sc));
    }
    KILN_TRY(ids, svc->CreateSchedules(project, std::move(specs)));
    co_return Response{200, IdsJson("Scheduled", "schedules", *ids)};
  });

  router.Add("GET", base + "/schedules", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    KILN_TRY(p, GetPaging(req));
    co_return Response{200, ListJson("schedules", svc->ListSchedules(project, p->page, p->per_page),
                                     WriteSchedule)};
  });

  router.Add("GET", base + "/schedules/:schedule", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    KILN_TRY(sc, svc->GetSchedule(project, std::string(req.Param("schedule"))));
    co_return Response{200, Json([&](JsonWriter& w) { WriteSchedule(w, *sc); })};
  });

  router.Add(
      "POST", base + "/schedules/:schedule/cancel",
      [svc, acc](Request& req) -> awaitable<Response> {
        KILN_AUTH(*acc, req, project);
        KILN_TRY(was, svc->CancelSchedule(project, std::string(req.Param("schedule"))));
        co_return Response{200, MsgJson(*was == "scheduled" ? "Cancelled" : "Already " + *was)};
      });

  // S5: the same fields as create, on one schedule; absent ones stay.
  router.Add("PUT", base + "/schedules/:schedule", [svc, acc](Request& req) -> awaitable<Response> {
    KILN_AUTH(*acc, req, project);
    KILN_TRY(old, svc->GetSchedule(project, std::string(req.Param("schedule"))));
    KILN_TRY(doc, ParseObject(req.body));
    const JsonValue* o = &doc->root();
    if (auto it = doc->root().FindMember("schedule");
        it != doc->root().MemberEnd() && !it->value.IsNull()) {
      if (!it->value.IsObject())
        co_return ErrorResponse(Error::InvalidArgument("schedule must be an object"));
      o = &it->value;  // {"schedule": {...}} as well as the bare fields
    }
    KILN_TRY(sc, ScheduleFromJson(*o, *old));
    KILN_TRY(updated, svc->UpdateSchedule(project, std::move(*sc)));
    co_return Response{200, Json([&](JsonWriter& w) { WriteSchedule(w, *updated); })};
  });
}

}  // namespace kiln::api
