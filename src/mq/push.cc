#include "mq/push.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cctype>

#include "base/ids.h"
#include "mq/engine.h"  // ValidateQueueName

namespace kiln::mq {
namespace {

TimeMs Seconds(int64_t s) { return s * 1000; }

void FailTry(PushPlan& plan, size_t i, const store::QueueRecord& q, TimeMs now) {
  Delivery& d = plan.deliveries[i];
  if (!plan.unicast) {
    if (d.retries_remaining > 0) {
      --d.retries_remaining;
      d.status = DeliveryStatus::kRetrying;
      d.next_try_at = now + Seconds(q.retries_delay);
    } else {
      d.status = DeliveryStatus::kError;
    }
    return;
  }
  // Unicast: the next subscriber at once; after a whole round, wait.
  d.status = DeliveryStatus::kRetrying;
  size_t n = plan.deliveries.size();
  plan.cursor = (i + 1) % n;
  if (plan.cursor != plan.round_start) {
    // At once, unless it still waits out retries_delay (the round went on
    // with a subscriber added meanwhile; see FollowSubscribers).
    Delivery& next = plan.deliveries[plan.cursor];
    next.next_try_at = std::max(next.next_try_at, now);
    return;
  }
  if (plan.retries_remaining > 0) {
    --plan.retries_remaining;
    for (auto& x : plan.deliveries) x.retries_remaining = plan.retries_remaining;
    plan.deliveries[plan.cursor].next_try_at = now + Seconds(q.retries_delay);
  } else {
    for (auto& x : plan.deliveries) x.status = DeliveryStatus::kError;
  }
}

}  // namespace

const char* StatusName(DeliveryStatus s) {
  switch (s) {
    case DeliveryStatus::kQueued:
      return "queued";
    case DeliveryStatus::kRetrying:
      return "retrying";
    case DeliveryStatus::kReserved:
      return "reserved";
    case DeliveryStatus::kDeleted:
      return "deleted";
    case DeliveryStatus::kError:
      return "error";
  }
  return "unknown";
}

bool PushPlan::Complete() const {
  if (deliveries.empty()) return true;
  if (unicast) {
    return std::any_of(deliveries.begin(), deliveries.end(),
                       [](const Delivery& d) { return d.status == DeliveryStatus::kDeleted; }) ||
           std::all_of(deliveries.begin(), deliveries.end(),
                       [](const Delivery& d) { return d.final(); });
  }
  return std::all_of(deliveries.begin(), deliveries.end(),
                     [](const Delivery& d) { return d.final(); });
}

bool PushPlan::Failed() const {
  if (unicast) {
    return !deliveries.empty() &&
           std::all_of(deliveries.begin(), deliveries.end(),
                       [](const Delivery& d) { return d.status == DeliveryStatus::kError; });
  }
  return std::any_of(deliveries.begin(), deliveries.end(),
                     [](const Delivery& d) { return d.status == DeliveryStatus::kError; });
}

std::vector<size_t> PushPlan::Due(TimeMs now) const {
  std::vector<size_t> out;
  if (Complete()) return out;
  auto due = [&](const Delivery& d) {
    return !d.in_flight &&
           (d.status == DeliveryStatus::kQueued || d.status == DeliveryStatus::kRetrying) &&
           d.next_try_at <= now;
  };
  if (unicast) {
    if (cursor < deliveries.size() && due(deliveries[cursor])) out.push_back(cursor);
    return out;
  }
  for (size_t i = 0; i < deliveries.size(); ++i)
    if (due(deliveries[i])) out.push_back(i);
  return out;
}

std::optional<TimeMs> PushPlan::NextDue() const {
  if (Complete()) return std::nullopt;
  std::optional<TimeMs> best;
  for (size_t i = 0; i < deliveries.size(); ++i) {
    const auto& d = deliveries[i];
    if (d.final() || d.in_flight) continue;
    if (unicast && i != cursor && d.status != DeliveryStatus::kReserved) continue;
    if (!best || d.next_try_at < *best) best = d.next_try_at;
  }
  // The expiry, when it would give up on something (not on a 202).
  bool expirable = std::any_of(deliveries.begin(), deliveries.end(), [](const Delivery& d) {
    return !d.final() && !d.in_flight && d.status != DeliveryStatus::kReserved;
  });
  if (best && expirable && expires_at > 0 && expires_at < *best) best = expires_at;
  return best;
}

PushPlan NewPlan(const store::QueueRecord& q,
                 std::vector<std::pair<std::string, std::string>> headers, TimeMs now) {
  PushPlan plan;
  plan.unicast = q.type == "unicast";
  plan.headers = std::move(headers);
  plan.retries_remaining = q.retries;
  for (const auto& s : q.subscribers) {
    Delivery d;
    d.subscriber = s.name;
    d.retries_remaining = q.retries;
    d.next_try_at = now;
    plan.deliveries.push_back(std::move(d));
  }
  return plan;
}

void OnAnswer(PushPlan& plan, size_t i, int status, const std::string& error,
              const store::QueueRecord& q, TimeMs now) {
  if (i >= plan.deliveries.size()) return;
  Delivery& d = plan.deliveries[i];
  d.in_flight = false;
  ++d.tries;
  d.last_try_at = now;
  d.status_code = status;
  d.msg = error;
  if (d.status == DeliveryStatus::kDeleted) {
    // Acknowledged while its request was still on its way: the subscriber
    // has the message, whatever the answer says.
  } else if (status == 202) {
    d.status = DeliveryStatus::kReserved;
    d.next_try_at = now + Seconds(q.message_timeout);
  } else if (status >= 200 && status < 300) {
    d.status = DeliveryStatus::kDeleted;
  } else {
    if (d.msg.empty()) d.msg = "subscriber answered " + std::to_string(status);
    FailTry(plan, i, q, now);
  }
}

void ExpireReservations(PushPlan& plan, const store::QueueRecord& q, TimeMs now) {
  for (size_t i = 0; i < plan.deliveries.size(); ++i) {
    Delivery& d = plan.deliveries[i];
    if (d.status == DeliveryStatus::kReserved && d.next_try_at <= now) {
      d.msg = "not acknowledged within the message timeout";
      FailTry(plan, i, q, now);
      // The timeout was this try's wait: the next one goes now, not after
      // retries_delay on top of it.
      Delivery& next = plan.deliveries[plan.unicast ? plan.cursor : i];
      if (next.status == DeliveryStatus::kRetrying)
        next.next_try_at = std::min(next.next_try_at, now);
    }
  }
}

bool ExpirePlan(PushPlan& plan, TimeMs now) {
  if (plan.expires_at == 0 || now < plan.expires_at || plan.Complete()) return false;
  bool gave_up = false;
  for (auto& d : plan.deliveries) {
    // A 202 is the subscriber's: its acknowledgement or its timeout decides.
    if (d.final() || d.in_flight || d.status == DeliveryStatus::kReserved) continue;
    d.status = DeliveryStatus::kError;
    d.msg = "expired before it was delivered";
    gave_up = true;
  }
  return gave_up;
}

bool Acknowledge(PushPlan& plan, const std::string& subscriber, uint64_t reservation) {
  for (auto& d : plan.deliveries) {
    // In flight too: a subscriber may acknowledge before its 202 is read.
    bool open = d.status == DeliveryStatus::kReserved ||
                (d.in_flight && d.status != DeliveryStatus::kDeleted);
    if ((subscriber.empty() || d.subscriber == subscriber) && open &&
        d.reservation == reservation) {
      d.status = DeliveryStatus::kDeleted;
      return true;
    }
  }
  return false;
}

bool FollowSubscribers(PushPlan& plan, const store::QueueRecord& q, TimeMs now) {
  if (plan.Complete()) return false;
  auto gone = [&](const Delivery& d) {
    return std::none_of(q.subscribers.begin(), q.subscribers.end(),
                        [&](const store::Subscriber& s) { return s.name == d.subscriber; });
  };
  bool removed = std::any_of(plan.deliveries.begin(), plan.deliveries.end(), gone);
  // Unicast: where the failover stands, by subscriber, to be found again.
  auto name_at = [&](size_t i) {
    return i < plan.deliveries.size() ? plan.deliveries[i].subscriber : std::string();
  };
  std::string at_cursor = name_at(plan.cursor), at_round_start = name_at(plan.round_start);
  bool reached_one = std::any_of(plan.deliveries.begin(), plan.deliveries.end(), [](const auto& d) {
    return d.status == DeliveryStatus::kDeleted;
  });
  std::erase_if(plan.deliveries, gone);
  // Unicast: the message is for one of the queue's subscribers, whichever
  // they are now. Multicast: for the ones it was posted to, unless none of
  // them is left and none had it, when it goes to the present ones rather
  // than nowhere.
  bool add = plan.unicast || (plan.deliveries.empty() && !reached_one);
  bool added = false;
  for (const auto& s : q.subscribers) {
    if (!add) break;
    bool have = std::any_of(plan.deliveries.begin(), plan.deliveries.end(),
                            [&](const Delivery& d) { return d.subscriber == s.name; });
    if (have) continue;
    Delivery d;
    d.subscriber = s.name;
    d.retries_remaining = plan.unicast ? plan.retries_remaining : q.retries;
    d.next_try_at = now;
    plan.deliveries.push_back(std::move(d));
    added = true;
  }
  if (removed || added) {
    // The failover goes on from the same subscriber (one in flight stays
    // the only one in flight); from the first when that one is gone.
    auto index_of = [&](const std::string& name) -> std::optional<size_t> {
      for (size_t i = 0; i < plan.deliveries.size(); ++i)
        if (!name.empty() && plan.deliveries[i].subscriber == name) return i;
      return std::nullopt;
    };
    auto cursor = index_of(at_cursor);
    plan.cursor = cursor.value_or(0);
    plan.round_start = cursor ? index_of(at_round_start).value_or(*cursor) : 0;
  }
  if (plan.unicast && added && plan.cursor < plan.deliveries.size()) {
    // A subscriber added while the failover waits out retries_delay is
    // tried now: the message is for any one of them, and it may be the
    // one that works. One in flight or holding a 202 stays the current.
    // Waiting after a failed try, that is: not a message whose delay has
    // not ended, which none of its subscribers gets before its time.
    const Delivery& at = plan.deliveries[plan.cursor];
    bool waiting = at.status == DeliveryStatus::kRetrying && at.tries > 0 && !at.in_flight &&
                   at.next_try_at > now;
    if (waiting)
      for (size_t i = 0; i < plan.deliveries.size(); ++i)
        if (plan.deliveries[i].tries == 0 && plan.deliveries[i].next_try_at <= now) {
          plan.cursor = plan.round_start = i;
          break;
        }
  }
  return removed || added;
}

namespace {

std::optional<IronMqUrl> ParseIronUrl(std::string_view url, std::string_view scheme) {
  if (url.substr(0, scheme.size()) != scheme) return std::nullopt;
  std::string_view rest = url.substr(scheme.size());
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::string_view authority = rest.substr(0, slash);
  IronMqUrl u;
  u.queue = std::string(rest.substr(slash + 1));
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view cred = authority.substr(0, at);
    size_t colon = cred.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    u.project_id = std::string(cred.substr(0, colon));
    u.token = std::string(cred.substr(colon + 1));
    if (!IsObjectId(u.project_id) || u.token.empty()) return std::nullopt;
    authority = authority.substr(at + 1);
  }
  for (unsigned char c : authority)
    if (!(std::isalnum(c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']'))
      return std::nullopt;
  u.host = std::string(authority);
  return u;
}

}  // namespace

std::optional<IronMqUrl> ParseIronMqUrl(std::string_view url) {
  auto u = ParseIronUrl(url, "ironmq://");
  if (!u || !ValidateQueueName(u->queue)) return std::nullopt;
  return u;
}

std::string WithoutSecret(std::string_view url) {
  size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::string(url);
  size_t start = scheme + 3;
  size_t end = url.find_first_of("/?#", start);
  size_t at = url.substr(0, end).rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(url);
  size_t colon = url.substr(0, at).find(':', start);
  size_t secret = colon == std::string_view::npos ? start : colon + 1;
  return std::string(url.substr(0, secret)) + "***" + std::string(url.substr(at));
}

std::optional<IronMqUrl> ParseIronWorkerUrl(std::string_view url) {
  auto u = ParseIronUrl(url, "ironworker://");
  if (!u || u->queue.empty() || u->queue.size() > 255) return std::nullopt;
  for (unsigned char c : u->queue)
    if (c < 0x20 || c == 0x7f || c == '/' || c == '?') return std::nullopt;
  return u;
}

std::string EncodePlan(const PushPlan& plan) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  auto str = [&](const std::string& s) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  };
  w.StartObject();
  w.Key("v");
  w.Int(1);
  w.Key("unicast");
  w.Bool(plan.unicast);
  w.Key("cursor");
  w.Uint64(plan.cursor);
  w.Key("round_start");
  w.Uint64(plan.round_start);
  w.Key("retries_remaining");
  w.Int64(plan.retries_remaining);
  if (plan.hops) {
    w.Key("hops");
    w.Int(plan.hops);
  }
  if (plan.spread != 1) {
    w.Key("spread");
    w.Int(plan.spread);
  }
  if (plan.expires_at > 0) {
    w.Key("expires_at");
    w.Int64(plan.expires_at);
  }
  w.Key("headers");
  w.StartArray();
  for (const auto& [k, v] : plan.headers) {
    w.StartArray();
    str(k);
    str(v);
    w.EndArray();
  }
  w.EndArray();
  w.Key("deliveries");
  w.StartArray();
  for (const auto& d : plan.deliveries) {
    w.StartObject();
    w.Key("subscriber");
    str(d.subscriber);
    w.Key("status");
    w.Int(static_cast<int>(d.status));
    w.Key("retries_remaining");
    w.Int64(d.retries_remaining);
    w.Key("tries");
    w.Int64(d.tries);
    w.Key("status_code");
    w.Int(d.status_code);
    w.Key("msg");
    str(d.msg);
    w.Key("last_try_at");
    w.Int64(d.last_try_at);
    w.Key("next_try_at");
    w.Int64(d.next_try_at);
    w.Key("reservation");
    w.Uint64(d.reservation);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize());
}

std::optional<PushPlan> DecodePlan(std::string_view b) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(b.data(), b.size());
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("v") || !doc["v"].IsInt() ||
      doc["v"].GetInt() != 1)
    return std::nullopt;
  auto i64 = [](const rapidjson::Value& o, const char* k) -> int64_t {
    auto it = o.FindMember(k);
    return it != o.MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : 0;
  };
  auto s = [](const rapidjson::Value& o, const char* k) -> std::string {
    auto it = o.FindMember(k);
    return it != o.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
  };
  PushPlan plan;
  plan.unicast = doc.HasMember("unicast") && doc["unicast"].IsBool() && doc["unicast"].GetBool();
  plan.cursor = static_cast<size_t>(i64(doc, "cursor"));
  plan.round_start = static_cast<size_t>(i64(doc, "round_start"));
  plan.retries_remaining = i64(doc, "retries_remaining");
  plan.hops = static_cast<int>(std::clamp<int64_t>(i64(doc, "hops"), 0, kMaxHops + 1));
  if (doc.HasMember("spread"))
    plan.spread = static_cast<int>(std::clamp<int64_t>(i64(doc, "spread"), 1, kMaxSpread + 1));
  plan.expires_at = std::max<int64_t>(i64(doc, "expires_at"), 0);
  if (doc.HasMember("headers") && doc["headers"].IsArray()) {
    for (const auto& h : doc["headers"].GetArray())
      if (h.IsArray() && h.Size() == 2 && h[0].IsString() && h[1].IsString())
        plan.headers.emplace_back(h[0].GetString(), h[1].GetString());
  }
  if (doc.HasMember("deliveries") && doc["deliveries"].IsArray()) {
    for (const auto& o : doc["deliveries"].GetArray()) {
      if (!o.IsObject()) return std::nullopt;
      Delivery d;
      d.subscriber = s(o, "subscriber");
      d.status = static_cast<DeliveryStatus>(std::clamp<int64_t>(i64(o, "status"), 0, 4));
      d.retries_remaining = i64(o, "retries_remaining");
      d.tries = i64(o, "tries");
      d.status_code = static_cast<int>(i64(o, "status_code"));
      d.msg = s(o, "msg");
      d.last_try_at = i64(o, "last_try_at");
      d.next_try_at = i64(o, "next_try_at");
      auto r = o.FindMember("reservation");
      d.reservation = r != o.MemberEnd() && r->value.IsUint64() ? r->value.GetUint64() : 0;
      plan.deliveries.push_back(std::move(d));
    }
  }
  if (plan.cursor >= plan.deliveries.size()) plan.cursor = plan.round_start = 0;
  return plan;
}

}  // namespace kiln::mq
