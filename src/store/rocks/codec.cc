#include "store/rocks/codec.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstring>

namespace kiln::store::rocks {
namespace {

constexpr uint8_t kStateVersion = 1;
static_assert(kStateBytes == 1 + 8 + 8 + 4 + 8);
constexpr size_t kStateSize = kStateBytes;

void PutFixed64(char* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
uint64_t GetFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

template <typename F>
std::string WriteJson(F&& body) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  w.Key("v");
  w.Int(kFormatVersion);
  body(w);
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize());
}

void Str(Writer& w, const char* k, const std::string& v) {
  w.Key(k);
  w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}
void Int(Writer& w, const char* k, int64_t v) {
  w.Key(k);
  w.Int64(v);
}

Result<rapidjson::Document> ParseRecord(std::string_view b, const char* what) {
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(b.data(), b.size());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("v") || !d["v"].IsInt())
    return Fail(Error::Internal(std::string("corrupt ") + what + " record"));
  if (d["v"].GetInt() != kFormatVersion)
    return Fail(Error::Internal(std::string("unsupported ") + what + " record version"));
  return d;
}
std::string GetStr(const rapidjson::Document& d, const char* k) {
  auto it = d.FindMember(k);
  return it != d.MemberEnd() && it->value.IsString()
             ? std::string(it->value.GetString(), it->value.GetStringLength())
             : std::string();
}
int64_t GetInt(const rapidjson::Document& d, const char* k, int64_t def) {
  auto it = d.FindMember(k);
  return it != d.MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : def;
}

}  // namespace

std::string EncodeU64(uint64_t v) {
  std::string s(8, '\0');
  PutFixed64(s.data(), v);
  return s;
}
uint64_t DecodeU64(std::string_view b) { return b.size() >= 8 ? GetFixed64(b.data()) : 0; }

std::string MessageKey(uint64_t qid, uint64_t id) {
  auto k = MessageKeyBytes(qid, id);
  return std::string(k.data(), k.size());
}

std::array<char, 16> MessageKeyBytes(uint64_t qid, uint64_t id) {
  std::array<char, 16> k;
  PutFixed64(k.data(), qid);
  PutFixed64(k.data() + 8, id);
  return k;
}

std::array<char, kStateBytes> EncodeStateBytes(const MessageState& s) {
  std::array<char, kStateBytes> b{};
  b[0] = static_cast<char>(kStateVersion);
  PutFixed64(&b[1], static_cast<uint64_t>(s.visible_at));
  PutFixed64(&b[9], static_cast<uint64_t>(s.expires_at));
  uint32_t rc = s.reserved_count;
  for (int i = 3; i >= 0; --i, rc >>= 8) b[17 + i] = static_cast<char>(rc & 0xff);
  PutFixed64(&b[21], s.reservation);
  return b;
}

std::string EncodeState(const MessageState& s) {
  auto b = EncodeStateBytes(s);
  return std::string(b.data(), b.size());
}

Result<MessageState> DecodeState(uint64_t id, std::string_view b) {
  if (b.size() != kStateSize || static_cast<uint8_t>(b[0]) != kStateVersion)
    return Fail(Error::Internal("corrupt message state record"));
  MessageState s;
  s.id = id;
  s.visible_at = static_cast<TimeMs>(GetFixed64(&b[1]));
  s.expires_at = static_cast<TimeMs>(GetFixed64(&b[9]));
  uint32_t rc = 0;
  for (int i = 0; i < 4; ++i) rc = (rc << 8) | static_cast<uint8_t>(b[17 + i]);
  s.reserved_count = rc;
  s.reservation = GetFixed64(&b[21]);
  return s;
}

std::string EncodeQueue(const QueueRecord& q) {
  return WriteJson([&](Writer& w) {
    Int(w, "qid", static_cast<int64_t>(q.qid));
    Str(w, "project_id", q.project_id);
    Str(w, "name", q.name);
    Str(w, "type", q.type);
    Int(w, "message_timeout", q.message_timeout);
    Int(w, "message_expiration", q.message_expiration);
    Str(w, "dead_letter_queue", q.dead_letter_queue);
    Int(w, "max_reservations", q.max_reservations);
    Int(w, "created_at", q.created_at);
    if (!q.alerts.empty()) {
      w.Key("alerts");
      w.StartArray();
      for (const auto& a : q.alerts) {
        w.StartObject();
        Str(w, "id", a.id);
        Str(w, "type", a.type);
        Str(w, "direction", a.direction);
        Int(w, "trigger", a.trigger);
        Str(w, "queue", a.queue);
        Int(w, "snooze", a.snooze);
        w.EndObject();
      }
      w.EndArray();
    }
    if (q.push()) {
      w.Key("subscribers");
      w.StartArray();
      for (const auto& sub : q.subscribers) {
        w.StartObject();
        Str(w, "name", sub.name);
        Str(w, "url", sub.url);
        w.Key("headers");
        w.StartArray();
        for (const auto& [k, v] : sub.headers) {
          w.StartArray();
          w.String(k.data(), static_cast<rapidjson::SizeType>(k.size()));
          w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
          w.EndArray();
        }
        w.EndArray();
        w.EndObject();
      }
      w.EndArray();
      Int(w, "retries", q.retries);
      Int(w, "retries_delay", q.retries_delay);
      Str(w, "error_queue", q.error_queue);
    }
  });
}

Result<QueueRecord> DecodeQueue(std::string_view b) {
  auto d = ParseRecord(b, "queue");
  if (!d) return Fail(d.error());
  QueueRecord q;
  q.qid = static_cast<uint64_t>(GetInt(*d, "qid", 0));
  q.project_id = GetStr(*d, "project_id");
  q.name = GetStr(*d, "name");
  q.type = GetStr(*d, "type");
  if (q.type.empty()) q.type = "pull";  // a record without one is not a push queue
  q.message_timeout = GetInt(*d, "message_timeout", 60);
  q.message_expiration = GetInt(*d, "message_expiration", 604800);
  q.dead_letter_queue = GetStr(*d, "dead_letter_queue");
  q.max_reservations = GetInt(*d, "max_reservations", 10);
  q.created_at = GetInt(*d, "created_at", 0);
  q.retries = GetInt(*d, "retries", 3);
  q.retries_delay = GetInt(*d, "retries_delay", 60);
  q.error_queue = GetStr(*d, "error_queue");
  auto alerts = d->FindMember("alerts");
  if (alerts != d->MemberEnd() && alerts->value.IsArray()) {
    for (const auto& o : alerts->value.GetArray()) {
      if (!o.IsObject()) return Fail(Error::Internal("corrupt queue record: alert"));
      auto str = [&](const char* k) {
        auto it = o.FindMember(k);
        return it != o.MemberEnd() && it->value.IsString() ? std::string(it->value.GetString())
                                                           : std::string();
      };
      auto num = [&](const char* k) {
        auto it = o.FindMember(k);
        return it != o.MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : int64_t{0};
      };
      q.alerts.push_back(
          {str("id"), str("type"), str("direction"), num("trigger"), str("queue"), num("snooze")});
    }
  }
  auto subs = d->FindMember("subscribers");
  if (subs != d->MemberEnd() && subs->value.IsArray()) {
    for (const auto& o : subs->value.GetArray()) {
      if (!o.IsObject() || !o.HasMember("name") || !o["name"].IsString() || !o.HasMember("url") ||
          !o["url"].IsString())
        return Fail(Error::Internal("corrupt queue record: subscriber"));
      Subscriber sub{o["name"].GetString(), o["url"].GetString(), {}};
      if (o.HasMember("headers") && o["headers"].IsArray())
        for (const auto& h : o["headers"].GetArray())
          if (h.IsArray() && h.Size() == 2 && h[0].IsString() && h[1].IsString())
            sub.headers.emplace_back(h[0].GetString(), h[1].GetString());
      q.subscribers.push_back(std::move(sub));
    }
  }
  return q;
}

std::string EncodeProject(const ProjectRecord& p) {
  return WriteJson([&](Writer& w) {
    Str(w, "id", p.id);
    Str(w, "name", p.name);
    Int(w, "created_at", p.created_at);
  });
}

Result<ProjectRecord> DecodeProject(std::string_view b) {
  auto d = ParseRecord(b, "project");
  if (!d) return Fail(d.error());
  return ProjectRecord{GetStr(*d, "id"), GetStr(*d, "name"), GetInt(*d, "created_at", 0)};
}

std::string EncodeToken(const TokenRecord& t) {
  return WriteJson([&](Writer& w) {
    Str(w, "id", t.id);
    Str(w, "hash", t.hash);
    Str(w, "project_id", t.project_id);
    Str(w, "name", t.name);
    w.Key("admin");
    w.Bool(t.admin);
    Int(w, "created_at", t.created_at);
  });
}

Result<TokenRecord> DecodeToken(std::string_view b) {
  auto d = ParseRecord(b, "token");
  if (!d) return Fail(d.error());
  TokenRecord t;
  t.id = GetStr(*d, "id");
  t.hash = GetStr(*d, "hash");
  t.project_id = GetStr(*d, "project_id");
  t.name = GetStr(*d, "name");
  auto it = d->FindMember("admin");
  t.admin = it != d->MemberEnd() && it->value.IsBool() && it->value.GetBool();
  t.created_at = GetInt(*d, "created_at", 0);
  return t;
}

}  // namespace kiln::store::rocks
