// IronMQ v3 pull-queue endpoints (iron-api.md §2; docs/http-api.md).

#include <algorithm>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>

#include "api/api.h"
#include "api/auth.h"
#include "api/errors.h"
#include "api/handler.h"
#include "api/json.h"
#include "base/ids.h"
#include "base/time_format.h"

namespace kiln::api {
namespace {

namespace asio = boost::asio;
using asio::awaitable;
using http::Request;
using http::Response;

constexpr const char* kPrefix = "/3/projects/:project/queues";

struct Ctx {
  Services s;
};

Response Ok(std::string body, int status = 200) { return Response{status, std::move(body)}; }
Response Msg(std::string_view text) { return Ok(MsgJson(text)); }

// Posts through the engine and resumes the awaiting coroutine on its own
// executor with the result. The initiation holds only raw pointers: with
// GCC 12, Boost 1.74's use_awaitable destroys the initiation object twice,
// which is harmless only for trivially destructible ones. `req` lives in the
// awaiting coroutine's frame.
using PostResult = Result<std::vector<uint64_t>>;

struct PostRequest {
  std::string project, queue;
  std::vector<mq::NewMessage> msgs;
  // An io thread serving one connection writes the post itself.
  store::Store::Writer writer = store::Store::Writer::kCommitter;
};

struct PostInitiation {
  mq::Engine* engine;
  PostRequest* req;

  template <typename Handler>
  void operator()(Handler handler) const {
    auto ex = asio::get_associated_executor(handler);
    auto h = std::make_shared<Handler>(std::move(handler));
    engine->Post(
        req->project, req->queue, std::move(req->msgs),
        [h, ex](PostResult r) {
          asio::post(ex, [h, r = std::move(r)]() mutable { (*h)(std::move(r)); });
        },
        req->writer);
  }
};

store::Store::Writer WriterFor(const Request& req) {
  return req.sole_connection ? store::Store::Writer::kCaller : store::Store::Writer::kCommitter;
}

awaitable<PostResult> AsyncPost(mq::Engine* engine, PostRequest* req) {
  return asio::async_initiate<decltype(asio::use_awaitable), void(PostResult)>(
      PostInitiation{engine, req}, asio::use_awaitable);
}

void WriteQueue(JsonWriter& w, const mq::QueueInfo& q, bool with_counts) {
  const auto& r = q.record;
  w.StartObject();
  w.Key("project_id");
  WriteString(w, r.project_id);
  w.Key("name");
  WriteString(w, r.name);
  if (with_counts) {
    w.Key("size");
    w.Uint64(q.size);
    w.Key("total_messages");
    w.Uint64(q.total_messages);
  }
  w.Key("message_timeout");
  w.Int64(r.message_timeout);
  w.Key("message_expiration");
  w.Int64(r.message_expiration);
  w.Key("type");
  WriteString(w, r.type);
  if (!r.dead_letter_queue.empty()) {
    w.Key("dead_letter");
    w.StartObject();
    w.Key("queue_name");
    WriteString(w, r.dead_letter_queue);
    w.Key("max_reservations");
    w.Int64(r.max_reservations);
    w.EndObject();
  }
  if (!r.alerts.empty()) {
    w.Key("alerts");
    w.StartArray();
    for (const auto& a : r.alerts) {
      w.StartObject();
      w.Key("id");
      WriteString(w, a.id);
      w.Key("type");
      WriteString(w, a.type);
      w.Key("direction");
      WriteString(w, a.direction);
      w.Key("trigger");
      w.Int64(a.trigger);
      w.Key("queue");
      WriteString(w, a.queue);
      w.Key("snooze");
      w.Int64(a.snooze);
      w.EndObject();
    }
    w.EndArray();
  }
  if (r.push()) {
    w.Key("push");
    w.StartObject();
    w.Key("subscribers");
    w.StartArray();
    for (const auto& sub : r.subscribers) {
      w.StartObject();
      w.Key("name");
      WriteString(w, sub.name);
      w.Key("url");
      WriteString(w, sub.url);
      if (!sub.headers.empty()) {
        w.Key("headers");
        w.StartObject();
        for (const auto& [k, v] : sub.headers) {
          WriteString(w, k);
          WriteString(w, v);
        }
        w.EndObject();
      }
      w.EndObject();
    }
    w.EndArray();
    w.Key("retries");
    w.Int64(r.retries);
    w.Key("retries_delay");
    w.Int64(r.retries_delay);
    if (!r.error_queue.empty()) {
      w.Key("error_queue");
      WriteString(w, r.error_queue);
    }
    w.EndObject();
  }
  w.EndObject();
}

Response QueueResponse(const mq::QueueInfo& q, bool with_counts) {
  return Ok(Json([&](JsonWriter& w) {
    w.StartObject();
    w.Key("queue");
    WriteQueue(w, q, with_counts);
    w.EndObject();
  }));
}

void WriteMessage(JsonWriter& w, const mq::Message& m) {
  w.StartObject();
  w.Key("id");
  WriteString(w, std::to_string(m.id));
  w.Key("body");
  WriteString(w, m.body);
  w.Key("reserved_count");
  w.Uint(m.reserved_count);
  if (!m.reservation_id.empty()) {
    w.Key("reservation_id");
    WriteString(w, m.reservation_id);
  }
  w.EndObject();
}

Response MessagesResponse(const std::vector<mq::Message>& msgs) {
  return Ok(Json([&](JsonWriter& w) {
    w.StartObject();
    w.Key("messages");
    w.StartArray();
    for (const auto& m : msgs) WriteMessage(w, m);
    w.EndArray();
    w.EndObject();
  }));
}

Result<std::vector<store::Subscriber>> ParseSubscribers(const JsonValue* arr) {
  std::vector<store::Subscriber> out;
  if (!arr) return Fail(Error::InvalidArgument("subscribers must be an array"));
  for (const auto& o : arr->GetArray()) {
    if (!o.IsObject()) return Fail(Error::InvalidArgument("each subscriber must be an object"));
    auto name = GetString(o, "name");
    if (!name) return Fail(name.error());
    auto url = GetString(o, "url");
    if (!url) return Fail(url.error());
    auto headers = GetObject(o, "headers");
    if (!headers) return Fail(headers.error());
    store::Subscriber sub{name->value_or(""), url->value_or(""), {}};
    if (*headers) {
      for (const auto& m : (*headers)->GetObject()) {
        if (!m.value.IsString())
          return Fail(Error::InvalidArgument("subscriber header values must be strings"));
        sub.headers.emplace_back(std::string(m.name.GetString(), m.name.GetStringLength()),
                                 std::string(m.value.GetString(), m.value.GetStringLength()));
      }
    }
    out.push_back(std::move(sub));
  }
  return out;
}

Result<mq::Headers> ParseHeaderObject(const JsonValue& obj, const char* key) {
  auto h = GetObject(obj, key);
  if (!h) return Fail(h.error());
  mq::Headers out;
  if (!*h) return out;
  for (const auto& m : (*h)->GetObject()) {
    if (!m.value.IsString())
      return Fail(Error::InvalidArgument(std::string(key) + " values must be strings"));
    // With their lengths: a NUL inside must be refused, not cut at.
    out.emplace_back(std::string(m.name.GetString(), m.name.GetStringLength()),
                     std::string(m.value.GetString(), m.value.GetStringLength()));
  }
  return out;
}

Result<std::vector<store::Alert>> ParseAlerts(const JsonValue* arr) {
  std::vector<store::Alert> out;
  if (!arr) return Fail(Error::InvalidArgument("alerts must be an array"));
  for (const auto& o : arr->GetArray()) {
    if (!o.IsObject()) return Fail(Error::InvalidArgument("each alert must be an object"));
    store::Alert a;
    auto type = GetString(o, "type");
    auto direction = GetString(o, "direction");
    auto queue = GetString(o, "queue");
    auto trigger = GetInt(o, "trigger");
    auto snooze = GetInt(o, "snooze");
    for (const auto* r : {&type, &direction, &queue})
      if (!*r) return Fail(r->error());
    for (const auto* r : {&trigger, &snooze})
      if (!*r) return Fail(r->error());
    if (!*type) return Fail(Error::InvalidArgument("alert type is required"));
    if (!*trigger) return Fail(Error::InvalidArgument("alert trigger is required"));
    a.type = **type;
    a.direction = direction->value_or("");
    if (a.direction.empty()) a.direction = "asc";  // Go's Alert sends "" when unset
    a.queue = queue->value_or("");
    a.trigger = **trigger;
    a.snooze = snooze->value_or(0);
    out.push_back(std::move(a));
  }
  return out;
}

Result<mq::QueueSettings> ParseSettings(const std::string& body) {
  auto doc = ParseObject(body);
  if (!doc) return Fail(doc.error());
  mq::QueueSettings s;
  auto q = GetObject(*doc, "queue");
  if (!q) return Fail(q.error());
  if (!*q) {
    // {} (or other members only): all defaults. Queue fields at the top
    // level are a client's mistake, not something to ignore silently.
    for (const char* k : {"type", "message_timeout", "message_expiration", "push", "dead_letter",
                          "alerts", "subscribers", "retries", "retries_delay", "error_queue"})
      if (doc->root().HasMember(k))
        return Fail(Error::InvalidArgument(
            std::string("queue settings go inside {\"queue\": {...}}: ") + k));
    return s;
  }
  const auto& o = **q;
  auto type = GetString(o, "type");
  if (!type) return Fail(type.error());
  s.type = *type;
  auto push = GetObject(o, "push");
  if (!push) return Fail(push.error());
  if (*push) {
    const auto& p = **push;
    auto subs = GetArray(p, "subscribers");
    if (!subs) return Fail(subs.error());
    if (*subs) {
      auto parsed = ParseSubscribers(*subs);
      if (!parsed) return Fail(parsed.error());
      s.subscribers = std::move(*parsed);
    }
    auto retries = GetInt(p, "retries");
    if (!retries) return Fail(retries.error());
    s.retries = *retries;
    auto delay = GetInt(p, "retries_delay");
    if (!delay) return Fail(delay.error());
    s.retries_delay = *delay;
    auto eq = GetString(p, "error_queue");
    if (!eq) return Fail(eq.error());
    s.error_queue = *eq;
  }
  for (auto [key, field] : {std::pair{"message_timeout", &s.message_timeout},
                            std::pair{"message_expiration", &s.message_expiration}}) {
    auto v = GetInt(o, key);
    if (!v) return Fail(v.error());
    // Go's QueueInfo sends its zero values (no omitempty): 0 is "not given".
    if (*v != 0) *field = *v;
  }
  auto dl = GetObject(o, "dead_letter");
  if (!dl) return Fail(dl.error());
  if (*dl) {
    auto name = GetString(**dl, "queue_name");
    if (!name) return Fail(name.error());
    auto max = GetInt(**dl, "max_reservations");
    if (!max) return Fail(max.error());
    // Without queue_name only max_reservations changes (of a queue that has
    // a dead letter queue); "" removes it.
    if (!*name && !*max)
      return Fail(Error::InvalidArgument("dead_letter needs queue_name or max_reservations"));
    s.dead_letter_queue = *name;
    s.max_reservations = *max;
  }
  auto alerts = GetArray(o, "alerts");
  if (!alerts) return Fail(alerts.error());
  if (*alerts) {
    auto parsed = ParseAlerts(*alerts);
    if (!parsed) return Fail(parsed.error());
    s.alerts = std::move(*parsed);
  }
  return s;
}

Result<uint64_t> MessageId(const Request& req) {
  uint64_t id = 0;
  if (!ParseU64(req.Param("id"), &id)) return Fail(Error::NotFound("Message not found"));
  return id;
}

// A count an earlier Kiln that pushed the post here sent in header `name`
// (lower case, as parsed), within [least, most + 1]; `least` when there is
// none or it is not a count. It only ever stops loops, it grants nothing:
// a count too big to parse is still too big.
int CountFrom(const Request& req, std::string_view name, int least, int most) {
  std::string_view v = req.Header(name);
  uint64_t n = 0;
  if (ParseU64(v, &n))
    return static_cast<int>(std::clamp<uint64_t>(n, least, static_cast<uint64_t>(most) + 1));
  bool digits =
      !v.empty() && std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
  return digits ? most + 1 : least;
}

// The hops and spread a post's messages start with (mq::kHopsHeader,
// mq::kSpreadHeader).
int HopsOf(const Request& req) { return CountFrom(req, "kiln-hops", 0, mq::kMaxHops); }
int SpreadOf(const Request& req) { return CountFrom(req, "kiln-spread", 1, mq::kMaxSpread); }

}  // namespace

void AddMqRoutes(http::Router& router, const Services& services) {
  auto ctx = std::make_shared<Ctx>(Ctx{services});
  const std::string q = std::string(kPrefix) + "/:queue";

  router.Add("GET", kPrefix, [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    int64_t per_page = 30;
    if (auto v = req.Query("per_page")) {
      KILN_TRY(n, ParseIntParam("per_page", *v));
      if (*n < 1 || *n > 100)
        co_return ErrorResponse(Error::InvalidArgument("per_page must be between 1 and 100"));
      per_page = *n;
    }
    auto prefix = req.Query("prefix");
    auto previous = req.Query("previous");
    auto names = ctx->s.engine->ListQueues(project, prefix ? *prefix : "",
                                           previous ? *previous : "", static_cast<int>(per_page));
    co_return Ok(Json([&](JsonWriter& w) {
      w.StartObject();
      w.Key("queues");
      w.StartArray();
      for (const auto& n : names) {
        w.StartObject();
        w.Key("name");
        WriteString(w, n);
        w.EndObject();
      }
      w.EndArray();
      w.EndObject();
    }));
  });

  router.Add("GET", q, [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(info, ctx->s.engine->GetQueue(project, std::string(req.Param("queue"))));
    co_return QueueResponse(*info, true);
  });

  router.Add("PUT", q, [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(settings, ParseSettings(req.body));
    KILN_TRY(info, ctx->s.engine->PutQueue(project, std::string(req.Param("queue")), *settings));
    co_return QueueResponse(*info, false);
  });

  router.Add("PATCH", q, [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(settings, ParseSettings(req.body));
    KILN_TRY(info, ctx->s.engine->UpdateQueue(project, std::string(req.Param("queue")), *settings));
    co_return QueueResponse(*info, true);
  });

  router.Add("DELETE", q, [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(r, ctx->s.engine->DeleteQueue(project, std::string(req.Param("queue"))));
    co_return Msg("Deleted");
  });

  // M1: post messages.
  router.Add("POST", q + "/messages", [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(arr, GetArray(*doc, "messages"));
    if (!*arr || (*arr)->Empty())
      co_return ErrorResponse(Error::InvalidArgument("messages must be a non-empty array"));
    std::vector<mq::NewMessage> msgs;
    int hops = HopsOf(req), spread = SpreadOf(req);
    for (const auto& m : (*arr)->GetArray()) {
      if (!m.IsObject())
        co_return ErrorResponse(Error::InvalidArgument("each message must be an object"));
      KILN_TRY(body, GetString(m, "body"));
      if (!*body) co_return ErrorResponse(Error::InvalidArgument("body is required"));
      KILN_TRY(delay, GetInt(m, "delay"));
      KILN_TRY(headers, ParseHeaderObject(m, "push_headers"));
      msgs.push_back({std::move(**body), delay->value_or(0), std::move(*headers), hops, spread});
    }
    PostRequest post{project, std::string(req.Param("queue")), std::move(msgs), WriterFor(req)};
    PostResult ids = co_await AsyncPost(ctx->s.engine, &post);
    if (!ids) co_return ErrorResponse(ids.error());
    co_return Ok(Json([&](JsonWriter& w) {
                   w.StartObject();
                   w.Key("ids");
                   w.StartArray();
                   for (auto id : *ids) WriteString(w, std::to_string(id));
                   w.EndArray();
                   w.Key("msg");
                   w.String("Messages put on queue.");
                   w.EndObject();
                 }),
                 201);
  });

  // M2: webhook, the raw body becomes one message.
  router.Add("POST", q + "/webhook", [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    // Headers X-Subscribers-<Name> become push header <Name>; ones that
    // break the push-header rules are dropped.
    mq::Headers push_headers;
    constexpr std::string_view kPrefix = "x-subscribers-";
    for (const auto& [k, v] : req.headers) {
      if (k.size() <= kPrefix.size() || k.compare(0, kPrefix.size(), kPrefix) != 0) continue;
      mq::Headers one{{k.substr(kPrefix.size()), v}};
      if (push_headers.size() < 5 && mq::ValidatePushHeaders(one)) push_headers.push_back(one[0]);
    }
    std::vector<mq::NewMessage> msgs;
    msgs.push_back({std::move(req.body), 0, std::move(push_headers), HopsOf(req), SpreadOf(req)});
    PostRequest post{project, std::string(req.Param("queue")), std::move(msgs), WriterFor(req)};
    PostResult ids = co_await AsyncPost(ctx->s.engine, &post);
    if (!ids) co_return ErrorResponse(ids.error());
    co_return Ok(Json([&](JsonWriter& w) {
                   w.StartObject();
                   w.Key("ids");
                   w.StartArray();
                   WriteString(w, std::to_string(ids->at(0)));
                   w.EndArray();
                   w.Key("msg");
                   w.String("Messages put on queue.");
                   w.EndObject();
                 }),
                 201);
  });

  // M3: reserve, with long polling.
  router.Add("POST", q + "/reservations", [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(n, GetInt(*doc, "n"));
    KILN_TRY(timeout, GetInt(*doc, "timeout"));
    KILN_TRY(wait, GetInt(*doc, "wait"));
    KILN_TRY(del, GetBool(*doc, "delete"));
    mq::ReserveOptions o;
    o.n = static_cast<int>(std::clamp<int64_t>(n->value_or(1), -1, 1000));
    if (*timeout != 0) o.timeout = *timeout;  // Go's Pop sends 0: the queue's default
    o.delete_messages = del->value_or(false);
    int64_t wait_s = wait->value_or(0);
    if (wait_s < 0 || wait_s > mq::kMaxWait)
      co_return ErrorResponse(Error::InvalidArgument("wait must be between 0 and 30"));
    std::string queue(req.Param("queue"));
    auto& engine = *ctx->s.engine;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_s);
    auto ex = co_await asio::this_coro::executor;
    for (;;) {
      bool can_wait =
          wait_s > 0 && !*ctx->s.stopping && std::chrono::steady_clock::now() < deadline;
      std::shared_ptr<mq::Waiter> waiter;
      std::shared_ptr<asio::steady_timer> timer;
      if (can_wait) {
        timer = std::make_shared<asio::steady_timer>(ex, deadline);
        waiter = std::make_shared<mq::Waiter>();
        waiter->wake = [timer, ex] { asio::post(ex, [timer] { timer->cancel(); }); };
      }
      KILN_TRY(msgs, engine.Reserve(project, queue, o, waiter));
      if (!msgs->empty() || !waiter) co_return MessagesResponse(*msgs);
      boost::system::error_code ec;
      co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      bool woken = engine.CancelWait(project, queue, waiter.get());
      // A client that gave up waiting (its own timeout) gets nothing: a
      // message reserved for it would stay hidden for its timeout, or with
      // `delete` be gone.
      if (req.PeerClosed()) {
        if (woken) engine.PassWake(project, queue);  // woken for a message it leaves
        co_return MessagesResponse({});
      }
      if (!ec) {  // the wait ran out: one last look
        KILN_TRY(last, engine.Reserve(project, queue, o));
        co_return MessagesResponse(*last);
      }
    }
  });

  // M5: peek.
  router.Add("GET", q + "/messages", [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    int64_t n = 1;
    if (auto v = req.Query("n")) {
      KILN_TRY(parsed, ParseIntParam("n", *v));
      n = *parsed;
    }
    if (n < 1 || n > 100)
      co_return ErrorResponse(Error::InvalidArgument("n must be between 1 and 100"));
    KILN_TRY(msgs,
             ctx->s.engine->Peek(project, std::string(req.Param("queue")), static_cast<int>(n)));
    co_return MessagesResponse(*msgs);
  });

  // M7/M8: delete several, or clear when there is no "ids".
  router.Add("DELETE", q + "/messages", [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(ids, GetArray(*doc, "ids"));
    std::string queue(req.Param("queue"));
    // Only a body without "ids" clears: a null one is a mistake, not "all".
    if (!*ids && doc->root().HasMember("ids"))
      co_return ErrorResponse(Error::InvalidArgument("ids must be an array"));
    if (!*ids) {
      KILN_TRY(r, ctx->s.engine->Clear(project, queue));
      co_return Msg("Cleared");
    }
    std::vector<mq::DeleteRef> refs;
    for (const auto& item : (*ids)->GetArray()) {
      mq::DeleteRef ref;
      std::string id_text;
      if (item.IsString()) {  // v1-style bare ids
        id_text = item.GetString();
      } else if (item.IsObject()) {
        KILN_TRY(id, GetString(item, "id"));
        KILN_TRY(rid, GetString(item, "reservation_id"));
        if (!*id) co_return ErrorResponse(Error::InvalidArgument("each of ids needs an id"));
        id_text = **id;
        ref.reservation_id = rid->value_or("");
      } else {
        co_return ErrorResponse(Error::InvalidArgument("each of ids must be an object"));
      }
      if (!ParseU64(id_text, &ref.id))
        co_return ErrorResponse(Error::NotFound("Message not found"));
      refs.push_back(std::move(ref));
    }
    if (refs.empty()) co_return ErrorResponse(Error::InvalidArgument("ids must not be empty"));
    KILN_TRY(r, ctx->s.engine->DeleteMessages(project, queue, refs));
    co_return Msg("Deleted");
  });

  const std::string m = q + "/messages/:id";

  router.Add("GET", m, [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(id, MessageId(req));
    KILN_TRY(msg, ctx->s.engine->GetMessage(project, std::string(req.Param("queue")), *id));
    co_return Ok(Json([&](JsonWriter& w) {
      w.StartObject();
      w.Key("message");
      WriteMessage(w, *msg);
      w.EndObject();
    }));
  });

  // Deletes a message, or acknowledges a push subscriber's 202. The
  // acknowledgement needs no token (the Iron-Subscriber-Message-Url a
  // subscriber gets carries none): its reservation id is the secret.
  router.Add("DELETE", m, [ctx](Request& req) -> awaitable<Response> {
    std::string project(req.Param("project"));
    auto auth = Authorize(*ctx->s.access, req, project);
    // Without a token, a failure says no more than that the token is missing.
    auto fail = [&](const Error& e) { return ErrorResponse(auth ? e : auth.error()); };
    auto id = MessageId(req);
    if (!id) co_return fail(id.error());
    auto doc = ParseObject(req.body);
    if (!doc) co_return fail(doc.error());
    auto rid = GetString(*doc, "reservation_id");
    if (!rid) co_return fail(rid.error());
    auto sub = GetString(*doc, "subscriber_name");
    if (!sub) co_return fail(sub.error());
    std::string reservation = rid->value_or("");
    std::string subscriber = sub->value_or("");
    if (auto v = req.Query("reservation_id"); v && reservation.empty()) reservation = *v;
    if (auto v = req.Query("subscriber_name"); v && subscriber.empty()) subscriber = *v;
    std::string queue(req.Param("queue"));
    if (!auth && (subscriber.empty() || reservation.empty())) co_return ErrorResponse(auth.error());
    auto r = ctx->s.engine->DeleteMessage(project, queue, {*id, reservation, subscriber});
    if (!r) co_return fail(r.error());
    co_return Msg("Deleted");
  });

  // M11: delivery status of a push message.
  router.Add("GET", m + "/subscribers", [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(id, MessageId(req));
    KILN_TRY(subs, ctx->s.engine->PushStatus(project, std::string(req.Param("queue")), *id));
    co_return Ok(Json([&](JsonWriter& w) {
      w.StartObject();
      w.Key("subscribers");
      w.StartArray();
      for (const auto& s : *subs) {
        w.StartObject();
        w.Key("name");
        WriteString(w, s.name);
        w.Key("url");
        WriteString(w, s.url);
        w.Key("status");
        WriteString(w, s.status);
        w.Key("status_code");
        w.Int(s.status_code);
        w.Key("retries_remaining");
        w.Int64(s.retries_remaining);
        w.Key("tries");
        w.Int64(s.tries);
        if (s.last_try_at) {
          w.Key("last_try_at");
          WriteString(w, FormatRfc3339(s.last_try_at));
        }
        if (!s.msg.empty()) {
          w.Key("msg");
          WriteString(w, s.msg);
        }
        w.EndObject();
      }
      w.EndArray();
      w.EndObject();
    }));
  });

  // Q6-Q8: subscribers of a push queue.
  auto subscribers = [ctx](const char* verb) {
    return [ctx, verb = std::string(verb)](Request& req) -> awaitable<Response> {
      KILN_AUTH(*ctx->s.access, req, project);
      KILN_TRY(doc, ParseObject(req.body));
      KILN_TRY(arr, GetArray(*doc, "subscribers"));
      KILN_TRY(subs, ParseSubscribers(*arr));
      std::string queue(req.Param("queue"));
      auto& e = *ctx->s.engine;
      Result<mq::QueueInfo> r = Fail(Error::Internal("unreachable"));
      if (verb == "add") {
        r = e.AddSubscribers(project, queue, *subs);
      } else if (verb == "replace") {
        r = e.ReplaceSubscribers(project, queue, *subs);
      } else {
        std::vector<std::string> names;
        for (const auto& s : *subs) names.push_back(s.name);
        r = e.RemoveSubscribers(project, queue, names);
      }
      if (!r) co_return ErrorResponse(r.error());
      co_return Msg("Updated");
    };
  };
  // Alerts: add (as IronMQ v2 had it; the same as PATCH of the queue with
  // alerts), replace all, remove several, remove one. The Ruby client's
  // add_alerts PATCHes .../alerts, with {"alerts":[..]} or
  // {"queue":{"alerts":[..]}}: PATCH adds as POST does, either shape.
  auto add_alerts = [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(doc, ParseObject(req.body));
    const JsonValue& root = doc->root();
    const JsonValue* holder = &root;
    if (auto wrapped = root.FindMember("queue");
        wrapped != root.MemberEnd() && !root.HasMember("alerts")) {
      if (!wrapped->value.IsObject())
        co_return ErrorResponse(Error::InvalidArgument("queue must be an object"));
      holder = &wrapped->value;
    }
    KILN_TRY(arr, GetArray(*holder, "alerts"));
    KILN_TRY(alerts, ParseAlerts(*arr));
    mq::QueueSettings s;
    s.alerts = std::move(*alerts);
    KILN_TRY(info, ctx->s.engine->UpdateQueue(project, std::string(req.Param("queue")), s));
    co_return QueueResponse(*info, true);
  };
  router.Add("POST", q + "/alerts", add_alerts);
  router.Add("PATCH", q + "/alerts", add_alerts);
  router.Add("PUT", q + "/alerts", [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(arr, GetArray(*doc, "alerts"));
    KILN_TRY(alerts, ParseAlerts(*arr));
    KILN_TRY(info, ctx->s.engine->ReplaceAlerts(project, std::string(req.Param("queue")),
                                                std::move(*alerts)));
    co_return QueueResponse(*info, true);
  });
  router.Add("DELETE", q + "/alerts", [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(arr, GetArray(*doc, "alerts"));
    if (!*arr) co_return ErrorResponse(Error::InvalidArgument("alerts must be an array"));
    std::vector<std::string> ids;
    for (const auto& a : (*arr)->GetArray()) {
      if (!a.IsObject())
        co_return ErrorResponse(Error::InvalidArgument("each alert must be an object"));
      KILN_TRY(id, GetString(a, "id"));
      if (!*id) co_return ErrorResponse(Error::InvalidArgument("alert id is required"));
      ids.push_back(**id);
    }
    KILN_TRY(info, ctx->s.engine->RemoveAlerts(project, std::string(req.Param("queue")), ids));
    co_return QueueResponse(*info, true);
  });
  router.Add("DELETE", q + "/alerts/:alert", [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(info, ctx->s.engine->RemoveAlerts(project, std::string(req.Param("queue")),
                                               {std::string(req.Param("alert"))}));
    co_return QueueResponse(*info, true);
  });

  router.Add("POST", q + "/subscribers", subscribers("add"));
  router.Add("PUT", q + "/subscribers", subscribers("replace"));
  router.Add("DELETE", q + "/subscribers", subscribers("remove"));

  router.Add("POST", m + "/touch", [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(id, MessageId(req));
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(rid, GetString(*doc, "reservation_id"));
    KILN_TRY(timeout, GetInt(*doc, "timeout"));
    if (*timeout == 0) *timeout = std::nullopt;  // Go sends 0: the queue's default
    KILN_TRY(fresh, ctx->s.engine->Touch(project, std::string(req.Param("queue")), *id,
                                         rid->value_or(""), *timeout));
    co_return Ok(Json([&](JsonWriter& w) {
      w.StartObject();
      w.Key("reservation_id");
      WriteString(w, *fresh);
      w.Key("msg");
      w.String("Touched");
      w.EndObject();
    }));
  });

  router.Add("POST", m + "/release", [ctx](Request& req) -> awaitable<Response> {
    KILN_AUTH(*ctx->s.access, req, project);
    KILN_TRY(id, MessageId(req));
    KILN_TRY(doc, ParseObject(req.body));
    KILN_TRY(rid, GetString(*doc, "reservation_id"));
    KILN_TRY(delay, GetInt(*doc, "delay"));
    KILN_TRY(r, ctx->s.engine->Release(project, std::string(req.Param("queue")), *id,
                                       rid->value_or(""), delay->value_or(0)));
    co_return Msg("Released");
  });
}

}  // namespace kiln::api
