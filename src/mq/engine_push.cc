// mq::Engine, push queues: starting deliveries, handling answers, retries,
// 202 acknowledgements, the error queue, subscriber management.
// Lock order: a queue's Slot::mu, then push_mu_ (a leaf).

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>

#include "base/ids.h"
#include "base/text.h"
#include "base/url.h"
#include "mq/engine.h"

namespace kiln::mq {
namespace {

constexpr int kMaxInFlight = 1024;  // deliveries at once, all hosts
// Per (project, host), so that one slow host cannot take them all.
constexpr int kMaxInFlightPerHost = 32;
constexpr int kMaxInFlightPerProject = kMaxInFlight / 2;  // nor one project's many hosts
constexpr size_t kFinishedKept = 1000;                    // per queue
constexpr size_t kMaxFailedReports = 10000;  // error reports waiting to be posted again
constexpr TimeMs kReportRetryMs = 10'000;    // and how long each waits
constexpr TimeMs kStartAgainMs = 1'000;      // after a delivery could not start
// An error report past this leaves the message's body out: reports of
// error queues that report to each other hold each other, escaped again at
// every round (the hop limit ends the loop; this, the growth).
constexpr size_t kMaxReportBytes = 1 << 20;

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// The key of a project's list of messages waiting for any free slot (host
// keys hold "://", project keys are 24 hex).
std::string GlobalKey(const std::string& project) { return "* " + project; }

// "scheme://host:port" of a URL: the unit of the per-host limit.
std::string HostKey(const std::string& url) {
  size_t s = url.find("://");
  if (s == std::string::npos) return url;
  size_t start = s + 3;
  size_t end = url.find_first_of("/?#", start);
  std::string authority =
      url.substr(start, end == std::string::npos ? std::string::npos : end - start);
  size_t at = authority.rfind('@');
  if (at != std::string::npos) authority = authority.substr(at + 1);
  return url.substr(0, s + 3) + authority;
}

// Whether a delivery to `url` may become a message: an ironmq:// one, or an
// http(s) one that names a queue (a Kiln's or IronMQ's messages or webhook
// endpoint). A task (ironworker://) or any other endpoint is not a copy.
// (A look for "/queues/" anywhere past the scheme, not a parse: it runs for
// every message sent, and a query that has it only counts one copy more.)
bool MakesMessages(const std::string& url) {
  if (url.rfind("ironmq://", 0) == 0) return true;
  if (url.rfind("ironworker://", 0) == 0) return false;
  return url.find("/queues/") != std::string::npos;
}

// The spread of each copy a message of `plan` makes (NewMessage::spread):
// its own times the queue's width, the most copies one message of it can
// make: a multicast queue's subscribers that may make a message, and its
// error report. A unicast message makes one (a delivery or a report).
int CopySpread(const PushPlan& plan, const store::QueueRecord& rec) {
  if (plan.unicast) return plan.spread;
  int width = rec.error_queue.empty() ? 0 : 1;
  for (const auto& s : rec.subscribers) width += MakesMessages(s.url) ? 1 : 0;
  return plan.spread * std::max(width, 1);
}

void SetHeader(Headers& h, const std::string& name, const std::string& value) {
  for (auto& [k, v] : h)
    if (IEquals(k, name)) {
      v = value;
      return;
    }
  h.emplace_back(name, value);
}

const char* const kReservedHeaders[] = {
    "Content-Type",        "User-Agent",           "Iron-Message-Id",
    "Iron-Reservation-Id", "Iron-Subscriber-Name", "Iron-Subscriber-Message-Url",
    kHopsHeader,           kSpreadHeader};

}  // namespace

Result<void> ValidateSubscribers(const std::vector<store::Subscriber>& subs,
                                 const std::string& project, const std::string& queue,
                                 const std::vector<store::Subscriber>& kept) {
  // A list longer than the cap from before the cap may only shrink, or stay.
  if (subs.size() > kMaxSubscribers && subs.size() >= kept.size() &&
      !std::equal(subs.begin(), subs.end(), kept.begin(), kept.end(),
                  [](const store::Subscriber& a, const store::Subscriber& b) {
                    return a.name == b.name && a.url == b.url;
                  }))
    return Fail(Error::InvalidArgument("A queue has at most " + std::to_string(kMaxSubscribers) +
                                       " subscribers"));
  for (size_t i = 0; i < subs.size(); ++i) {
    const auto& s = subs[i];
    // One the queue had already, as it was, keeps its url: a url stored
    // before a check was added does not block every later edit.
    bool unchanged = std::any_of(kept.begin(), kept.end(), [&](const store::Subscriber& k) {
      return k.name == s.name && k.url == s.url;
    });
    if (s.name.empty() || s.name.size() > 255)
      return Fail(Error::InvalidArgument("A subscriber needs a name of 1 to 255 bytes"));
    // The name goes out in a header (without its control bytes) and in
    // JSON (bytes that are not UTF-8 as U+FFFD), and comes back in an
    // acknowledgement: it must read back as it was. A name kept from
    // before this check stays.
    bool kept_name = std::any_of(kept.begin(), kept.end(),
                                 [&](const store::Subscriber& k) { return k.name == s.name; });
    if (!kept_name && (!IsUtf8(s.name) || std::any_of(s.name.begin(), s.name.end(), [](char c) {
          return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
        })))
      return Fail(
          Error::InvalidArgument("A subscriber name must be UTF-8 without control characters"));
    for (size_t j = 0; j < i; ++j)
      if (subs[j].name == s.name)
        return Fail(Error::InvalidArgument("Subscriber names must be unique: " + s.name));
    bool ironmq = s.url.rfind("ironmq://", 0) == 0;
    bool ironworker = s.url.rfind("ironworker://", 0) == 0;
    if (s.url.rfind("http://", 0) != 0 && s.url.rfind("https://", 0) != 0 && !ironmq && !ironworker)
      return Fail(Error::InvalidArgument(
          "Subscriber url must start with http://, https://, ironmq:// or ironworker://: " +
          s.url));
    if (!ironmq && !ironworker && !unchanged && !ParseHttpUrl(s.url))
      return Fail(Error::InvalidArgument(
          "Subscriber url must be http(s)://host[:port][/path] with a host of letters, digits, "
          ". - _ (or [v6]), a port 1-65535 and no spaces: " +
          s.url));
    if (ironmq) {
      auto u = ParseIronMqUrl(s.url);
      if (!u)
        return Fail(Error::InvalidArgument(
            "Subscriber url must be ironmq://[project_id:token@][host[:port]]/queue: " + s.url));
      // Into its own queue, every delivery would post another message.
      if (u->host.empty() && (u->project_id.empty() || u->project_id == project) &&
          u->queue == queue)
        return Fail(Error::InvalidArgument("A queue cannot push to itself: " + s.url));
    }
    if (ironworker && !ParseIronWorkerUrl(s.url))
      return Fail(Error::InvalidArgument(
          "Subscriber url must be ironworker://[project_id:token@][host[:port]]/code_name: " +
          s.url));
    for (const auto& [k, v] : s.headers)
      if (!IsHeaderToken(k) || v.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
        return Fail(Error::InvalidArgument("Invalid subscriber header: " + k));
  }
  return Ok();
}

Result<void> ValidatePushHeaders(const Headers& h) {
  if (h.size() > 5) return Fail(Error::InvalidArgument("At most 5 push_headers are allowed"));
  for (const auto& [k, v] : h) {
    if (k.empty() || k.size() > 64)
      return Fail(Error::InvalidArgument("A push header name must be 1 to 64 bytes"));
    for (const char* r : kReservedHeaders)
      if (IEquals(k, r)) return Fail(Error::InvalidArgument("Push header not allowed: " + k));
    if (v.empty() || v.size() > 1024)
      return Fail(Error::InvalidArgument("A push header value must be 1 to 1024 bytes: " + k));
    if (!IsHeaderToken(k) || v.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
      return Fail(Error::InvalidArgument("Invalid push header: " + k));
  }
  return Ok();
}

void Engine::SetPushTransport(PushTransport* transport, std::string public_url) {
  public_url_ = std::move(public_url);
  transport_ = transport;
}

void Engine::StopPushes() {
  transport_ = nullptr;
  Flush();  // a barrier: every completion before it has run
}

void Engine::SchedulePush(const SlotPtr& slot, uint64_t id, TimeMs at) {
  std::lock_guard lock(push_mu_);
  push_due_.push({at, id, slot});
}

void Engine::TickPush(TimeMs now) {
  std::vector<PushDue> due;
  std::vector<FailedReport> reports;
  {
    std::lock_guard lock(push_mu_);
    while (!push_due_.empty() && push_due_.top().at <= now) {
      due.push_back(push_due_.top());
      push_due_.pop();
    }
    while (!failed_reports_.empty() && failed_reports_.front().at <= now) {
      reports.push_back(std::move(failed_reports_.front()));
      failed_reports_.pop_front();
    }
  }
  // One that cannot start now (out of memory, a transport that throws) is
  // due again in a second: popped, it would otherwise wait for a restart.
  for (auto& d : due) {
    try {
      StartPush(d.slot, d.id);
    } catch (const std::exception& e) {
      spdlog::error("push message {}: cannot start its delivery: {}; again in 1 s", d.id, e.what());
      SchedulePush(d.slot, d.id, now + kStartAgainMs);
    }
  }
  for (auto& r : reports) PostErrorNotice(r.project, std::move(r.notice));
}

void Engine::StartPush(const SlotPtr& slot, uint64_t id, const std::string* off_list) {
  StartPushes(slot, {&id, 1}, off_list);
}

// One lock of the queue for all of `ids` (a post's batch): the answers of
// deliveries under way need the same lock.
void Engine::StartPushes(const SlotPtr& slot, std::span<const uint64_t> ids,
                         const std::string* off_list) {
  PushTransport* transport = transport_;
  if (!transport) return;
  struct Send {
    uint64_t id;
    std::string subscriber;
    uint64_t reservation;
    std::string host;
    PushRequest request;
    bool need_body;  // not held in memory: read from the store, outside the lock
  };
  std::vector<Send> sends;
  std::vector<std::optional<ErrorNotice>> notices;
  std::string project;
  uint64_t qid = 0;
  {
    std::lock_guard lock(slot->mu);
    if (slot->deleted) return;
    const auto& rec = slot->queue.record();
    project = rec.project_id;
    qid = rec.qid;
    TimeMs now = clock_.NowMs();
    for (uint64_t id : ids) {
      auto it = slot->plans.find(id);
      if (it == slot->plans.end()) continue;
      PushPlan& plan = it->second;
      // On a list it stays there once, however often it is due; on each
      // list that holds one of its deliveries back.
      if (off_list) std::erase(plan.held_on, *off_list);
      auto hold = [&](Limited& list, const std::string& key) {
        if (std::find(plan.held_on.begin(), plan.held_on.end(), key) != plan.held_on.end())
          return false;
        list.waiting.emplace_back(slot, id);
        plan.held_on.push_back(key);
        return true;
      };
      ExpireReservations(plan, rec, now);
      ExpirePlan(plan, now);
      if (plan.Complete()) {
        notices.push_back(SettlePlan(*slot, id));
        continue;
      }
      auto due = plan.Due(now);
      const int spread = due.empty() ? 0 : CopySpread(plan, rec);
      bool waiting = false;  // on a list, whose next free slot restarts it
      for (size_t i : due) {
        auto& d = plan.deliveries[i];
        // Deliveries follow the queue's subscriber order unless it changed since.
        auto sub =
            i < rec.subscribers.size() && rec.subscribers[i].name == d.subscriber
                ? rec.subscribers.begin() + static_cast<std::ptrdiff_t>(i)
                : std::find_if(rec.subscribers.begin(), rec.subscribers.end(),
                               [&](const store::Subscriber& s) { return s.name == d.subscriber; });
        if (sub == rec.subscribers.end()) continue;
        // A project's own: another project's backlog to the same host
        // (a shared webhook service, or ironmq:// of this server) does not
        // make this one's wait.
        std::string host = project + " " + HostKey(sub->url);
        {
          std::lock_guard plock(push_mu_);
          Limited& h = hosts_[host];
          if (h.in_flight >= kMaxInFlightPerHost) {
            hold(h, host);
            waiting = true;
            continue;
          }
          Limited& p = projects_[project];
          if (p.in_flight >= kMaxInFlightPerProject) {
            // As for a host: the project's next answer restarts it.
            hold(p, project);
            waiting = true;
            continue;
          }
          if (in_flight_ >= kMaxInFlight) {
            // Every slot is taken: it waits its project's turn for the next.
            Limited& g = global_waiting_[project];
            bool first = g.waiting.empty();
            if (hold(g, GlobalKey(project)) && first) global_turns_.push_back(project);
            waiting = true;
            continue;
          }
          ++in_flight_;
          ++p.in_flight;
          ++h.in_flight;
        }
        d.in_flight = true;
        d.reservation = RandomU64() | 1;
        std::string rid = FormatReservationId(id, d.reservation);
        Send send{id, d.subscriber, d.reservation, std::move(host), {}, false};
        PushRequest& req = send.request;
        req.project_id = rec.project_id;
        req.qid = rec.qid;
        req.url = sub->url;
        req.hops = plan.hops;
        req.spread = spread;
        if (const std::string* held = plan.body.get())
          req.body = *held;
        else
          send.need_body = true;
        req.headers = {{"User-Agent", "IronMQ Pusherd"},
                       {"Content-Type", "text/plain; encoding=utf-8"}};
        for (const auto& [k, v] : sub->headers) SetHeader(req.headers, k, v);
        for (const auto& [k, v] : plan.headers) SetHeader(req.headers, k, v);
        SetHeader(req.headers, "Iron-Message-Id", std::to_string(id));
        SetHeader(req.headers, "Iron-Reservation-Id", rid);
        SetHeader(req.headers, "Iron-Subscriber-Name", d.subscriber);
        // Kiln's own: a Kiln that takes this delivery as a post (a webhook,
        // POST /messages) counts the hop and the copies, so loops across
        // servers end too.
        SetHeader(req.headers, kHopsHeader, std::to_string(plan.hops + 1));
        SetHeader(req.headers, kSpreadHeader, std::to_string(req.spread));
        SetHeader(req.headers, "Iron-Subscriber-Message-Url",
                  public_url_ + "/3/projects/" + rec.project_id + "/queues/" +
                      PercentEncode(rec.name) + "/messages/" + std::to_string(id) +
                      "?subscriber_name=" + PercentEncode(d.subscriber) + "&reservation_id=" + rid);
        sends.push_back(std::move(send));
      }
      auto next = plan.NextDue();
      if (next && !waiting) SchedulePush(slot, id, *next);
    }
  }
  for (auto& n : notices) PostErrorNotice(project, std::move(n));
  for (size_t k = 0; k < sends.size(); ++k) {
    Send& s = sends[k];
    if (s.need_body) {
      // Multicast: the previous send may be the same message's.
      if (k > 0 && sends[k - 1].id == s.id && !sends[k - 1].need_body) {
        s.request.body = sends[k - 1].request.body;
      } else if (auto b = store_.GetBody(qid, s.id)) {
        s.request.body = std::move(*b);
      } else {
        // Counted as a failed try: the message is not sent without its body.
        OnPushAnswer(slot, project, s.id, s.subscriber, s.reservation, s.host, 0,
                     "could not read the message: " + b.error().message());
        continue;
      }
      s.need_body = false;
    }
  }
  for (auto& s : sends) {
    if (s.need_body) continue;  // its body could not be read
    try {
      transport->Send(std::move(s.request),
                      [this, slot, project, id = s.id, sub = s.subscriber, rsv = s.reservation,
                       host = s.host](int status, std::string error) {
                        OnPushAnswer(slot, project, id, sub, rsv, host, status, std::move(error));
                      });
    } catch (const std::exception& e) {
      // Counted as a failed try, which frees its slots: no answer will come.
      OnPushAnswer(slot, project, s.id, s.subscriber, s.reservation, s.host, 0,
                   std::string("could not send: ") + e.what());
    }
  }
}

// Starts messages held back by a host's or project's limit until its free
// slots are taken. An entry may be stale (message deleted or delivered
// since, queue cleared, its subscriber on this host removed) and start
// nothing, so one freed slot can take several entries; stopping at the
// first would leave the rest waiting for answers that never come.
void Engine::RestartWaiting(std::unordered_map<std::string, Limited>& of, const std::string& key,
                            int limit) {
  for (;;) {
    std::pair<SlotPtr, uint64_t> next;
    {
      std::lock_guard lock(push_mu_);
      auto it = of.find(key);
      if (it == of.end()) return;
      if (it->second.waiting.empty()) {
        if (it->second.in_flight <= 0) of.erase(it);
        return;
      }
      if (it->second.in_flight >= limit) return;
      next = std::move(it->second.waiting.front());
      it->second.waiting.pop_front();
    }
    StartPush(next.first, next.second, &key);
  }
}

// Fills free slots from the messages that wait for one, a project at a
// time in turn: two projects with deep backlogs to slow hosts cannot keep
// every slot between them (each answer would restart its own project's).
void Engine::RestartGlobal() {
  for (;;) {
    std::pair<SlotPtr, uint64_t> next;
    std::string key;
    {
      std::lock_guard lock(push_mu_);
      if (in_flight_ >= kMaxInFlight || global_turns_.empty()) return;
      std::string project = std::move(global_turns_.front());
      global_turns_.pop_front();
      auto it = global_waiting_.find(project);
      if (it == global_waiting_.end()) continue;
      if (it->second.waiting.empty()) {
        global_waiting_.erase(it);
        continue;
      }
      next = std::move(it->second.waiting.front());
      it->second.waiting.pop_front();
      if (it->second.waiting.empty())
        global_waiting_.erase(it);
      else
        global_turns_.push_back(project);
      key = GlobalKey(project);
    }
    StartPush(next.first, next.second, &key);
  }
}

void Engine::OnPushAnswer(const SlotPtr& slot, const std::string& of_project, uint64_t id,
                          const std::string& subscriber, uint64_t reservation, std::string host,
                          int status, std::string error) {
  {
    std::lock_guard lock(push_mu_);
    --in_flight_;
    if (auto h = hosts_.find(host); h != hosts_.end()) --h->second.in_flight;
    if (auto p = projects_.find(of_project); p != projects_.end()) --p->second.in_flight;
  }
  RestartGlobal();  // first: what waits for any slot, by turns
  RestartWaiting(hosts_, host, kMaxInFlightPerHost);
  RestartWaiting(projects_, of_project, kMaxInFlightPerProject);
  std::optional<ErrorNotice> error_post;
  std::string project;
  bool again = false;
  {
    std::lock_guard lock(slot->mu);
    if (slot->deleted) return;
    auto it = slot->plans.find(id);
    const auto& rec = slot->queue.record();
    TimeMs now = clock_.NowMs();
    if (it == slot->plans.end()) {
      // Settled while this try was on its way (acknowledged before its
      // answer was read): the try is still shown in the statuses.
      for (auto& [fid, fplan] : slot->finished) {
        if (fid != id) continue;
        auto& fd = fplan.deliveries;
        auto d = std::find_if(fd.begin(), fd.end(), [&](const Delivery& x) {
          return x.in_flight && x.subscriber == subscriber && x.reservation == reservation;
        });
        if (d != fd.end())
          OnAnswer(fplan, static_cast<size_t>(d - fd.begin()), status, error, rec, now);
      }
      return;
    }
    project = rec.project_id;
    // The try is found by its subscriber and reservation, not by position:
    // subscribers removed while it was on its way shift the deliveries, and
    // an answer for a removed one has nothing left to update.
    auto& ds = it->second.deliveries;
    auto d = std::find_if(ds.begin(), ds.end(), [&](const Delivery& x) {
      return x.in_flight && x.subscriber == subscriber && x.reservation == reservation;
    });
    // A plain success need not be written: if it is lost in a crash, the
    // subscriber gets the message again (at least once), never less.
    bool delivered = false;
    if (d != ds.end()) {
      OnAnswer(it->second, static_cast<size_t>(d - ds.begin()), status, error, rec, now);
      delivered = status >= 200 && status < 300 && status != 202;
      if (!delivered) it->second.body.Drop();  // a retry is a while off: read it again then
      if (ExpirePlan(it->second, now)) delivered = false;  // to be written as given up
    }
    error_post = SettlePlan(*slot, id, !delivered);
    it = slot->plans.find(id);
    if (it != slot->plans.end()) {
      if (!it->second.held_on.empty()) {
        // Its host's next answer restarts it.
      } else if (!it->second.Due(now).empty()) {
        again = true;  // unicast: the next subscriber at once
      } else if (auto next = it->second.NextDue()) {
        SchedulePush(slot, id, *next);
      }
    }
  }
  PostErrorNotice(project, std::move(error_post));
  if (again) StartPush(slot, id);
}

// The JSON an error queue receives for message `id` (iron-api.md §2.4).
static std::string ErrorReport(const PushPlan& plan, const store::QueueRecord& rec, uint64_t id,
                               const std::string& text, bool with_body) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  auto str = [&](const std::string& s) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  };
  w.StartObject();
  w.Key("source_msg_id");
  str(std::to_string(id));
  w.Key("source_queue");
  str(rec.name);
  // The report is JSON: a body that is not UTF-8 (push queues take any
  // bytes) goes as base64 instead, whole.
  if (!with_body) {
    w.Key("body");
    str("");
    w.Key("body_omitted");
    w.Bool(true);
  } else if (IsUtf8(text)) {
    w.Key("body");
    str(text);
  } else {
    w.Key("body");
    str("");
    w.Key("body_base64");
    str(Base64(text));
  }
  w.Key("headers");
  w.StartObject();
  for (const auto& [k, v] : plan.headers) {
    str(k);
    str(v);
  }
  w.EndObject();
  w.Key("subscribers");
  w.StartArray();
  for (const auto& d : plan.deliveries) {
    w.StartObject();
    w.Key("name");
    str(d.subscriber);
    w.Key("url");
    auto sub = std::find_if(rec.subscribers.begin(), rec.subscribers.end(),
                            [&](const store::Subscriber& s) { return s.name == d.subscriber; });
    str(sub == rec.subscribers.end() ? std::string() : WithoutSecret(sub->url));
    w.Key("code");
    w.Int(d.status_code);
    w.Key("msg");
    str(d.msg);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize());
}

std::optional<Engine::ErrorNotice> Engine::SettlePlan(Slot& slot, uint64_t id, bool persist) {
  auto it = slot.plans.find(id);
  if (it == slot.plans.end()) return std::nullopt;
  const PushPlan& plan = it->second;
  const auto& rec = slot.queue.record();
  store::MessageBatch batch;
  if (!plan.Complete()) {
    if (persist) {
      batch.PutPlan(rec.qid, id, EncodePlan(plan));
      store_.Append(std::move(batch));
    }
    return std::nullopt;
  }
  std::optional<ErrorNotice> out;
  bool report = plan.Failed() && !rec.error_queue.empty();
  // The report is one more copy of the message, as a delivery is.
  int spread = CopySpread(plan, rec);
  if (report && (plan.hops + 1 > kMaxHops || spread > kMaxSpread)) {
    // As any post passed on or copied too often: the loop of error queues
    // ends here.
    spdlog::warn(
        "push message {} of {}: no error report to {}: passed on {} times, copied {} times already",
        id, rec.name, rec.error_queue, plan.hops, plan.spread);
    report = false;
  }
  if (report) {
    // A body that cannot be read is left out as a too-large one is
    // (`body_omitted`), not reported as an empty one.
    auto body = store_.GetBody(rec.qid, id);
    if (!body)
      spdlog::error("push message {} of {}: its error report goes without its body: {}", id,
                    rec.name, body.error().message());
    std::string text = body ? *body : std::string();
    std::string json = ErrorReport(plan, rec, id, text, /*with_body=*/body.has_value());
    if (json.size() > kMaxReportBytes) json = ErrorReport(plan, rec, id, text, /*with_body=*/false);
    out = ErrorNotice{rec.error_queue, NewMessage{std::move(json), 0, {}, plan.hops + 1, spread},
                      rec.qid, id};
  } else {
    batch.Delete(rec.qid, id, true);
    store_.Append(std::move(batch));
  }
  it->second.body.Drop();
  slot.finished.emplace_back(id, std::move(it->second));
  if (slot.finished.size() > kFinishedKept) slot.finished.pop_front();
  slot.plans.erase(it);
  return out;
}

Result<std::vector<SubscriberStatus>> Engine::PushStatus(const std::string& project,
                                                         const std::string& name, uint64_t id) {
  auto slot = Find(project, name);
  if (!slot) return Fail(Error::NotFound("Queue not found"));
  std::lock_guard lock(slot->mu);
  if (slot->deleted) return Fail(Error::NotFound("Queue not found"));
  const auto& rec = slot->queue.record();
  if (!rec.push()) return Fail(Error::InvalidArgument("Not a push queue"));
  const PushPlan* plan = nullptr;
  bool finished = false;
  if (auto it = slot->plans.find(id); it != slot->plans.end()) plan = &it->second;
  for (const auto& [fid, fplan] : slot->finished)
    if (fid == id) plan = &fplan, finished = true;
  if (!plan) return Fail(Error::NotFound("Message not found"));
  std::vector<SubscriberStatus> out;
  for (const auto& d : plan->deliveries) {
    // A finished unicast message's subscribers it never needed to try are
    // left out: "queued" there would be for ever, and a client polling
    // until nothing is queued (iron_go3's MessageSubscribersPollN) would
    // poll for ever.
    if (finished && plan->unicast && d.tries == 0 && d.status == DeliveryStatus::kQueued) continue;
    SubscriberStatus s;
    s.name = d.subscriber;
    for (const auto& sub : rec.subscribers)
      if (sub.name == d.subscriber) s.url = sub.url;
    s.status = StatusName(d.status);
    s.msg = d.msg;
    s.status_code = d.status_code;
    s.retries_remaining = plan->unicast ? plan->retries_remaining : d.retries_remaining;
    s.tries = d.tries;
    s.last_try_at = d.last_try_at;
    out.push_back(std::move(s));
  }
  return out;
}

void Engine::PostErrorNotice(const std::string& project, std::optional<ErrorNotice> notice) {
  if (!notice) return;
  store::MessageBatch batch;
  batch.Delete(notice->source_qid, notice->source_id, true);
  std::vector<NewMessage> messages;
  messages.push_back(notice->message);  // the notice is kept for another try
  std::string queue = notice->queue;
  PostChecked(
      project, queue, std::move(messages),
      [this, project, notice = std::move(*notice)](auto r) mutable {
        if (r) return;
        auto code = r.error().code();
        if (code == ErrorCode::kPermissionDenied || code == ErrorCode::kInvalidArgument ||
            code == ErrorCode::kTooLarge) {
          // Refused for good (its project is at its queue limit, say): the
          // message goes without its report, rather than waiting forever.
          spdlog::error("push message {}: its error report to {} is refused: {}; dropped",
                        notice.source_id, notice.queue, r.error().message());
          store::MessageBatch drop;
          drop.Delete(notice.source_qid, notice.source_id, true);
          store_.Append(std::move(drop));
          return;
        }
        // The message stays in the store until its report is posted.
        std::lock_guard lock(push_mu_);
        bool again = failed_reports_.size() < kMaxFailedReports;
        spdlog::error("push message {}: cannot post its error report to {}: {}; {}",
                      notice.source_id, notice.queue, r.error().message(),
                      again ? "trying again shortly" : "the next start reports it");
        if (again)
          failed_reports_.push_back({clock_.NowMs() + kReportRetryMs, project, std::move(notice)});
      },
      store::Store::Writer::kCommitter, std::move(batch));
}

Result<void> Engine::AcknowledgePush(const std::string& project, const std::string& name,
                                     uint64_t id, const std::string& reservation_id,
                                     const std::string& subscriber) {
  auto slot = Find(project, name);
  if (!slot) return Fail(Error::NotFound("Queue not found"));
  std::optional<ErrorNotice> error_post;
  {
    std::lock_guard lock(slot->mu);
    if (slot->deleted) return Fail(Error::NotFound("Queue not found"));
    auto it = slot->plans.find(id);
    if (it == slot->plans.end()) return Fail(Error::NotFound("Message not found"));
    uint64_t token = 0;
    if (!ParseReservationId(reservation_id, id, &token) ||
        !Acknowledge(it->second, subscriber, token))
      return Fail(Error::PermissionDenied("Reservation timed out"));
    error_post = SettlePlan(*slot, id);
  }
  PostErrorNotice(project, std::move(error_post));
  return Ok();
}

// Messages on their way follow the queue's new subscribers (push.h).
void Engine::FollowSubscribersLocked(const SlotPtr& slot) {
  ++slot->subscriber_edits;
  TimeMs now = clock_.NowMs();
  // Whatever changed is looked at now: a retry may be a day away.
  for (auto& [id, plan] : slot->plans)
    if (FollowSubscribers(plan, slot->queue.record(), now)) SchedulePush(slot, id, now);
}

Result<QueueInfo> Engine::EditSubscribers(
    const std::string& project, const std::string& name,
    const std::function<Result<void>(std::vector<store::Subscriber>&)>& edit) {
  auto slot = Find(project, name);
  if (!slot) return Fail(Error::NotFound("Queue not found"));
  std::lock_guard lock(slot->mu);
  if (slot->deleted) return Fail(Error::NotFound("Queue not found"));
  auto rec = slot->queue.record();
  if (!rec.push()) return Fail(Error::InvalidArgument("Subscribers are for push queues only"));
  const auto before = rec.subscribers;
  if (auto r = edit(rec.subscribers); !r) return Fail(r.error());
  if (rec.subscribers.empty())
    return Fail(Error::InvalidArgument("A push queue needs at least one subscriber"));
  if (auto v = ValidateSubscribers(rec.subscribers, rec.project_id, rec.name, before); !v)
    return Fail(v.error());
  if (auto w = store_.PutQueue(rec); !w) return Fail(w.error());
  slot->queue.record() = rec;
  FollowSubscribersLocked(slot);
  return QueueInfo{rec, slot->plans.size(), slot->queue.total_messages()};
}

Result<QueueInfo> Engine::AddSubscribers(const std::string& project, const std::string& name,
                                         const std::vector<store::Subscriber>& subs) {
  return EditSubscribers(project, name, [&](std::vector<store::Subscriber>& have) -> Result<void> {
    for (const auto& s : subs) {
      auto it = std::find_if(have.begin(), have.end(),
                             [&](const store::Subscriber& h) { return h.name == s.name; });
      if (it == have.end()) {
        have.push_back(s);
      } else {
        *it = s;
      }
    }
    return Ok();
  });
}

Result<QueueInfo> Engine::ReplaceSubscribers(const std::string& project, const std::string& name,
                                             const std::vector<store::Subscriber>& subs) {
  return EditSubscribers(project, name, [&](std::vector<store::Subscriber>& have) -> Result<void> {
    have = subs;
    return Ok();
  });
}

Result<QueueInfo> Engine::RemoveSubscribers(const std::string& project, const std::string& name,
                                            const std::vector<std::string>& names) {
  return EditSubscribers(project, name, [&](std::vector<store::Subscriber>& have) -> Result<void> {
    for (const auto& n : names) {
      auto it = std::find_if(have.begin(), have.end(),
                             [&](const store::Subscriber& h) { return h.name == n; });
      if (it == have.end()) return Fail(Error::NotFound("Subscriber not found: " + n));
      have.erase(it);
    }
    return Ok();
  });
}

}  // namespace kiln::mq
