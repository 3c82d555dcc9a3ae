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
  d.Parse(b.data(), b.size());
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

std::string EncodeCode(const Code& c) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  I(w, "v", 1);
  S(w, "id", c.id);
  S(w, "project_id", c.project_id);
  S(w, "name", c.name);
  I(w, "rev", c.rev);
  S(w, "image", c.image);
  S(w, "command", c.command);
  w.Key("env_vars");
  w.StartArray();
  for (const auto& [k, v] : c.env_vars) {
    w.StartArray();
    w.String(k.c_str());
    w.String(v.c_str());
    w.EndArray();
  }
  w.EndArray();
  S(w, "config", c.config);
  I(w, "max_concurrency", c.max_concurrency);
  I(w, "memory_mb", c.memory_mb);
  I(w, "created_at", c.created_at);
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize());
}

std::optional<Code> DecodeCode(std::string_view b) {
  rapidjson::Document d;
  if (!Parse(d, b)) return std::nullopt;
  Code c;
  c.id = GS(d, "id");
  c.project_id = GS(d, "project_id");
  c.name = GS(d, "name");
  c.rev = GI(d, "rev", 1);
  c.image = GS(d, "image");
  c.command = GS(d, "command");
  if (d.HasMember("env_vars") && d["env_vars"].IsArray())
    for (const auto& e : d["env_vars"].GetArray())
      if (e.IsArray() && e.Size() == 2 && e[0].IsString() && e[1].IsString())
        c.env_vars.emplace_back(e[0].GetString(), e[1].GetString());
  c.config = GS(d, "config");
  c.max_concurrency = GI(d, "max_concurrency");
  c.memory_mb = GI(d, "memory_mb", 512);
  c.created_at = GI(d, "created_at");
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
  S(w, "code_name", t.code_name);
  I(w, "code_rev", t.code_rev);
  S(w, "payload", t.payload);
  I(w, "priority", t.priority);
  I(w, "timeout", t.timeout);
  I(w, "run_after", t.run_after);
  S(w, "label", t.label);
  S(w, "cluster", t.cluster);
  I(w, "state", static_cast<int>(t.state));
  S(w, "msg", t.msg);
  I(w, "exit_code", t.exit_code);
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
  t.code_name = GS(d, "code_name");
  t.code_rev = GI(d, "code_rev");
  t.payload = GS(d, "payload");
  t.priority = static_cast<int>(GI(d, "priority"));
  t.timeout = GI(d, "timeout", 3600);
  t.run_after = GI(d, "run_after");
  t.label = GS(d, "label");
  t.cluster = GS(d, "cluster");
  t.state = static_cast<TaskState>(GI(d, "state"));
  t.msg = GS(d, "msg");
  t.exit_code = static_cast<int>(GI(d, "exit_code", -1));
  t.created_at = GI(d, "created_at");
  t.updated_at = GI(d, "updated_at");
  t.start_time = GI(d, "start_time");
  t.end_time = GI(d, "end_time");
  t.seq = static_cast<uint64_t>(GI(d, "seq"));
  return t;
}

}  // namespace kiln::worker
