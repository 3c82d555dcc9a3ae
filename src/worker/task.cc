#include "worker/task.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace kiln::worker {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void S(Writer& w, const char* k, const std::string& v) {
  w.Key(k);
  w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}
void I(Writer& w, const char* k, int64_t v) {
  w.Key(k);
  w.Int64(v);
}
std::string GS(const rapidjson::Value& o, const char* k) {
  auto it = o.FindMember(k);
  return it != o.MemberEnd() && it->value.IsString()
             ? std::string(it->value.GetString(), it->value.GetStringLength())
             : std::string();
}
int64_t GI(const rapidjson::Value& o, const char* k, int64_t def = 0) {
  auto it = o.FindMember(k);
  return it != o.MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : def;
}
bool Parse(rapidjson::Document& d, std::string_view b) {
  d.Parse<rapidjson::kParseIterativeFlag>(b.data(), b.size());
  return !d.HasParseError() && d.IsObject() && GI(d, "v") == 1;
}

}  // namespace

const char* StateName(TaskState s) {
  switch (s) {
    case TaskState::kQueued:
      return "queued";
    case TaskState::kPreparing:
      return "preparing";
    case TaskState::kRunning:
      return "running";
    case TaskState::kComplete:
      return "complete";
    case TaskState::kError:
      return "error";
    case TaskState::kCancelled:
      return "cancelled";
    case TaskState::kTimeout:
      return "timeout";
  }
  return "unknown";
}

std::optional<TaskState> StateFromName(std::string_view name) {
  for (int i = 0; i <= static_cast<int>(TaskState::kTimeout); ++i)
    if (name == StateName(static_cast<TaskState>(i))) return static_cast<TaskState>(i);
  if (name == "killed") return TaskState::kCancelled;  // the older docs' name
  return std::nullopt;
}

std::string EncodeCode(const Code& c) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  I(w, "v", 1);
  S(w, "id", c.id);
  S(w, "history_id", c.history_id);
  S(w, "project_id", c.project_id);
  S(w, "name", c.name);
  I(w, "rev", c.rev);
  S(w, "image", c.image);
  S(w, "command", c.command);
  S(w, "runtime", c.runtime);
  S(w, "file_name", c.file_name);
  S(w, "stack", c.stack);
  S(w, "checksum", c.checksum);
  I(w, "code_size", c.code_size);
  w.Key("env_vars");
  w.StartArray();
  for (const auto& [k, v] : c.env_vars) {
    w.StartArray();
    w.String(k.data(), static_cast<rapidjson::SizeType>(k.size()));
    w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
    w.EndArray();
  }
  w.EndArray();
  S(w, "config", c.config);
  I(w, "max_concurrency", c.max_concurrency);
  I(w, "retries", c.retries);
  I(w, "retries_delay", c.retries_delay);
  I(w, "default_priority", c.default_priority);
  I(w, "memory_mb", c.memory_mb);
  I(w, "disk_mb", c.disk_mb);
  I(w, "network", c.network ? 1 : 0);
  I(w, "paused", c.paused ? 1 : 0);
  I(w, "created_at", c.created_at);
  I(w, "updated_at", c.updated_at);
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize());
}

std::optional<Code> DecodeCode(std::string_view b) {
  rapidjson::Document d;
  if (!Parse(d, b)) return std::nullopt;
  Code c;
  c.id = GS(d, "id");
  c.history_id = GS(d, "history_id");
  if (c.history_id.empty()) c.history_id = c.id;
  c.project_id = GS(d, "project_id");
  c.name = GS(d, "name");
  c.rev = GI(d, "rev", 1);
  c.image = GS(d, "image");
  c.command = GS(d, "command");
  c.runtime = GS(d, "runtime");
  c.file_name = GS(d, "file_name");
  c.stack = GS(d, "stack");
  c.checksum = GS(d, "checksum");
  c.code_size = GI(d, "code_size");
  if (d.HasMember("env_vars") && d["env_vars"].IsArray())
    for (const auto& e : d["env_vars"].GetArray())
      if (e.IsArray() && e.Size() == 2 && e[0].IsString() && e[1].IsString())
        c.env_vars.emplace_back(e[0].GetString(), e[1].GetString());
  c.config = GS(d, "config");
  c.max_concurrency = GI(d, "max_concurrency");
  c.retries = GI(d, "retries");
  c.retries_delay = GI(d, "retries_delay");
  c.default_priority = static_cast<int>(GI(d, "default_priority"));
  c.memory_mb = GI(d, "memory_mb", 512);
  c.disk_mb = GI(d, "disk_mb", kDefaultDiskMb);
  c.network = GI(d, "network") != 0;
  c.paused = GI(d, "paused") != 0;
  c.created_at = GI(d, "created_at");
  c.updated_at = GI(d, "updated_at", c.created_at);
  return c;
}

std::string EncodeTask(const Task& t) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  I(w, "v", 1);
  S(w, "id", t.id);
  S(w, "project_id", t.project_id);
  S(w, "code_id", t.code_id);
  S(w, "code_history_id", t.code_history_id);
  S(w, "code_name", t.code_name);
  I(w, "code_rev", t.code_rev);
  S(w, "payload", t.payload);
  I(w, "priority", t.priority);
  I(w, "timeout", t.timeout);
  I(w, "run_after", t.run_after);
  S(w, "label", t.label);
  S(w, "cluster", t.cluster);
  S(w, "schedule_id", t.schedule_id);
  S(w, "original_task_id", t.original_task_id);
  I(w, "retry_count", t.retry_count);
  I(w, "sync", t.sync ? 1 : 0);
  I(w, "state", static_cast<int>(t.state));
  S(w, "msg", t.msg);
  I(w, "percent", t.percent);
  I(w, "exit_code", t.exit_code);
  I(w, "log_size", t.log_size);
  I(w, "created_at", t.created_at);
  I(w, "updated_at", t.updated_at);
  I(w, "start_time", t.start_time);
  I(w, "end_time", t.end_time);
  I(w, "seq", static_cast<int64_t>(t.seq));
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize());
}

std::optional<Task> DecodeTask(std::string_view b) {
  rapidjson::Document d;
  if (!Parse(d, b)) return std::nullopt;
  Task t;
  t.id = GS(d, "id");
  t.project_id = GS(d, "project_id");
  t.code_id = GS(d, "code_id");
  t.code_history_id = GS(d, "code_history_id");
  if (t.code_history_id.empty()) t.code_history_id = t.code_id;
  t.code_name = GS(d, "code_name");
  t.code_rev = GI(d, "code_rev");
  t.payload = GS(d, "payload");
  t.priority = static_cast<int>(GI(d, "priority"));
  t.timeout = GI(d, "timeout", 3600);
  t.run_after = GI(d, "run_after");
  t.label = GS(d, "label");
  t.cluster = GS(d, "cluster");
  t.schedule_id = GS(d, "schedule_id");
  t.original_task_id = GS(d, "original_task_id");
  t.retry_count = GI(d, "retry_count");
  t.sync = GI(d, "sync") != 0;
  t.state = static_cast<TaskState>(GI(d, "state"));
  t.msg = GS(d, "msg");
  t.percent = static_cast<int>(GI(d, "percent"));
  t.exit_code = static_cast<int>(GI(d, "exit_code", -1));
  t.log_size = GI(d, "log_size");
  t.created_at = GI(d, "created_at");
  t.updated_at = GI(d, "updated_at");
  t.start_time = GI(d, "start_time");
  t.end_time = GI(d, "end_time");
  t.seq = static_cast<uint64_t>(GI(d, "seq"));
  return t;
}

std::string EncodeSchedule(const Schedule& s) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  I(w, "v", 1);
  S(w, "id", s.id);
  S(w, "project_id", s.project_id);
  S(w, "code_name", s.code_name);
  S(w, "name", s.name);
  S(w, "payload", s.payload);
  I(w, "start_at", s.start_at);
  I(w, "end_at", s.end_at);
  I(w, "run_every", s.run_every);
  I(w, "run_times", s.run_times);
  S(w, "cron", s.cron);
  S(w, "time_zone", s.time_zone);
  if (s.priority) I(w, "priority", *s.priority);
  I(w, "timeout", s.timeout);
  I(w, "task_delay", s.task_delay);
  S(w, "cluster", s.cluster);
  S(w, "label", s.label);
  I(w, "max_concurrency", s.max_concurrency);
  S(w, "status", s.status);
  S(w, "msg", s.msg);
  I(w, "next_start", s.next_start);
  I(w, "last_run_time", s.last_run_time);
  I(w, "run_count", s.run_count);
  I(w, "error_count", s.error_count);
  I(w, "created_at", s.created_at);
  I(w, "updated_at", s.updated_at);
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize());
}

std::optional<Schedule> DecodeSchedule(std::string_view b) {
  rapidjson::Document d;
  if (!Parse(d, b)) return std::nullopt;
  Schedule s;
  s.id = GS(d, "id");
  s.project_id = GS(d, "project_id");
  s.code_name = GS(d, "code_name");
  s.name = GS(d, "name");
  s.payload = GS(d, "payload");
  s.start_at = GI(d, "start_at");
  s.end_at = GI(d, "end_at");
  s.run_every = GI(d, "run_every");
  s.run_times = GI(d, "run_times");
  s.cron = GS(d, "cron");
  s.time_zone = GS(d, "time_zone");
  if (d.HasMember("priority")) s.priority = static_cast<int>(GI(d, "priority"));
  s.timeout = GI(d, "timeout", 3600);
  s.task_delay = GI(d, "task_delay");
  s.cluster = GS(d, "cluster");
  s.label = GS(d, "label");
  s.max_concurrency = GI(d, "max_concurrency");
  s.status = GS(d, "status");
  s.msg = GS(d, "msg");
  s.next_start = GI(d, "next_start");
  s.last_run_time = GI(d, "last_run_time");
  s.run_count = GI(d, "run_count");
  s.error_count = GI(d, "error_count");
  s.created_at = GI(d, "created_at");
  s.updated_at = GI(d, "updated_at");
  return s;
}

}  // namespace kiln::worker
