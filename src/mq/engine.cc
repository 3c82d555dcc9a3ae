#include "mq/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>
#include <set>
#include <unordered_map>

#include "base/ids.h"
#include "base/text.h"
#include "mq/alert.h"

namespace kiln::mq {
namespace {

Error QueueNotFound() { return Error::NotFound("Queue not found"); }
Error MessageNotFound() { return Error::NotFound("Message not found"); }
Error ReservationMismatch() { return Error::PermissionDenied("Reservation timed out"); }

TimeMs Seconds(int64_t s) { return s * 1000; }

// How long messages whose dead-letter move failed wait before a reserve
// takes them (and tries the move) again.
constexpr TimeMs kDeadLetterRetryMs = 5'000;

Result<void> CheckRange(const char* what, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi)
    return Fail(Error::InvalidArgument(std::string(what) + " must be between " +
                                       std::to_string(lo) + " and " + std::to_string(hi)));
  return Ok();
}

}  // namespace

std::string FormatReservationId(uint64_t id, uint64_t token) { return HexU64(id) + HexU64(token); }

bool ParseReservationId(const std::string& s, uint64_t id, uint64_t* token) {
  uint64_t got_id = 0;
  return s.size() == 32 && ParseHexU64(std::string_view(s).substr(0, 16), &got_id) &&
         got_id == id && ParseHexU64(std::string_view(s).substr(16), token);
}

Result<void> ValidateQueueName(const std::string& name) {
  if (name.empty() || name.size() > 255)
    return Fail(Error::InvalidArgument("Queue name must be 1 to 255 bytes"));
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f || c == '/' || c == '?' || c == '#')
      return Fail(Error::InvalidArgument("Queue name contains an invalid character"));
  // Names go out in JSON, where bytes that are not UTF-8 would all print as
  // U+FFFD: two queues would list under one name that reaches neither.
  if (!IsUtf8(name)) return Fail(Error::InvalidArgument("Queue name must be UTF-8"));
  return Ok();
}

Engine::Engine(store::Store& store, const Clock& clock, EngineOptions options)
    : store_(store), clock_(clock), options_(options) {}

// Pending completions refer to this engine: let them run first.
Engine::~Engine() { Flush(); }

void Engine::Flush() {
  store::MessageBatch batch;
  std::shared_lock lock(map_mu_);
  for (auto& [k, slot] : queues_) {
    std::lock_guard slot_lock(slot->mu);
    if (slot->deleted || !slot->total_dirty) continue;
    batch.SetTotal(slot->queue.record().qid, slot->queue.total_messages());
    slot->total_dirty = false;
  }
  lock.unlock();
  CommitAndWait(std::move(batch));
}

uint64_t Engine::NextMessageId() {
  uint64_t id = next_id_.fetch_add(1) + 1;
  if (id <= id_floor_.load(std::memory_order_acquire)) return id;
  std::lock_guard lock(id_floor_mu_);
  uint64_t floor = id_floor_.load(std::memory_order_relaxed);
  if (id > floor) {
    floor = std::max(floor, id) + options_.id_lease;
    // A failed write leaves ids unique in this run; after a restart the
    // store's last floor and the newest message bound them.
    if (auto r = store_.SetMessageIdFloor(floor); !r)
      spdlog::error("message id floor not saved: {}", r.error().message());
    id_floor_.store(floor, std::memory_order_release);
  }
  return id;
}

Result<void> Engine::Recover() {
  std::unordered_map<uint64_t, SlotPtr> by_qid;
  auto r = store_.ForEachQueue([&](const store::QueueRecord& rec, uint64_t total) {
    auto slot = std::make_shared<Slot>(rec);
    slot->queue.set_total_messages(total);
    by_qid[rec.qid] = slot;
    queues_[Key(rec.project_id, rec.name)] = slot;
  });
  if (!r) return r;
  TimeMs now = clock_.NowMs();
  uint64_t max_id = 0;
  r = store_.ForEachMessage([&](uint64_t qid, const store::MessageState& s) {
    max_id = std::max(max_id, s.id);
    auto it = by_qid.find(qid);
    if (it == by_qid.end()) return;  // its queue was deleted; DeleteQueue removed the range
    if (it->second->queue.record().push()) return;  // delivered from its plan
    it->second->queue.Add(s, now);
  });
  if (!r) return r;
  for (auto& [qid, slot] : by_qid) slot->alert_size = slot->queue.size();
  for (const auto& [key, slot] : queues_) ++per_project_[slot->queue.record().project_id];
  // Push deliveries resume where they were; one in flight at the crash is due again.
  std::string unreadable;                                  // the first plan that cannot be read
  std::set<std::pair<uint64_t, uint64_t>> without_expiry;  // plans of a Kiln before expires_at
  r = store_.ForEachPlan([&](uint64_t qid, uint64_t id, std::string_view blob) {
    auto it = by_qid.find(qid);
    if (it == by_qid.end() || !unreadable.empty()) return;
    auto plan = DecodePlan(blob);
    if (!plan) {
      // As for every other record: not skipped (its message would never
      // be delivered, nor counted), but said.
      unreadable = "the push plan of message " + std::to_string(id) + " of queue " +
                   it->second->queue.record().name + " cannot be read";
      return;
    }
    if (plan->expires_at == 0) without_expiry.insert({qid, id});
    FollowSubscribers(*plan, it->second->queue.record(), now);
    auto next = plan->NextDue();
    it->second->plans.emplace(id, std::move(*plan));
    SchedulePush(it->second, id, next.value_or(now));
  });
  if (!r) return r;
  if (!unreadable.empty()) return Fail(Error::Internal(unreadable));
  if (!without_expiry.empty()) {
    // Their expiry is in their messages' states: read again for them only.
    r = store_.ForEachMessage([&](uint64_t qid, const store::MessageState& s) {
      if (!without_expiry.count({qid, s.id})) return;
      auto& slot = by_qid.at(qid);
      slot->plans.at(s.id).expires_at = s.expires_at;
      SchedulePush(slot, s.id, s.expires_at);  // besides its next try: whichever comes first
    });
    if (!r) return r;
  }
  // Ids grow with time, (ms << 20) leaving room for 2^20 per ms, and stay
  // above the store's floor, which is ahead of every id handed out before:
  // unique across restarts even when the newest messages were deleted and
  // the clock went back.
  auto floor = store_.MessageIdFloor();
  if (!floor) return Fail(floor.error());
  next_id_ = std::max({max_id, static_cast<uint64_t>(now) << 20, *floor});
  id_floor_ = next_id_.load() + options_.id_lease;
  if (options_.max_messages_per_project) {
    // Counted from the start, not only from the first Tick.
    std::lock_guard lock(sizes_mu_);
    for (const auto& [key, slot] : queues_)
      project_sizes_[slot->queue.record().project_id] += SizeOf(*slot);
  }
  return store_.SetMessageIdFloor(id_floor_.load());
}

Engine::SlotPtr Engine::Find(const std::string& project, const std::string& name) const {
  std::shared_lock lock(map_mu_);
  auto it = queues_.find(Key(project, name));
  return it == queues_.end() ? nullptr : it->second;
}

Result<Engine::SlotPtr> Engine::FindOrCreate(const std::string& project, const std::string& name,
                                             const QueueSettings* settings, bool* created) {
  if (created) *created = false;
  if (auto s = Find(project, name)) return s;
  if (auto v = ValidateQueueName(name); !v) return Fail(v.error());
  // One create at a time; its two synced writes happen outside map_mu_, so
  // that lookups (every request) go on meanwhile.
  std::lock_guard create(create_mu_);
  {
    std::shared_lock lock(map_mu_);
    if (auto it = queues_.find(Key(project, name)); it != queues_.end()) return it->second;
    if (auto n = per_project_.find(project);
        n != per_project_.end() && n->second >= options_.max_queues_per_project)
      return Fail(Error::PermissionDenied(
          "a project has at most " + std::to_string(options_.max_queues_per_project) + " queues"));
  }
  store::QueueRecord rec;
  rec.project_id = project;
  rec.name = name;
  rec.created_at = clock_.NowMs();
  // Settled before anyone can see it: a post racing the create finds the
  // queue with its type, never a pull queue that then turns push.
  if (settings) {
    if (auto v = ApplySettings(rec, *settings, true); !v) return Fail(v.error());
  }
  auto qid = store_.NextQueueId();
  if (!qid) return Fail(qid.error());
  rec.qid = *qid;
  if (auto w = store_.PutQueue(rec); !w) return Fail(w.error());
  auto slot = std::make_shared<Slot>(std::move(rec));
  {
    std::unique_lock lock(map_mu_);
    queues_.emplace(Key(project, name), slot);
    ++per_project_[project];
  }
  if (created) *created = true;
  return slot;
}

std::vector<std::string> Engine::ListQueues(const std::string& project, const std::string& prefix,
                                            const std::string& previous, int per_page) const {
  std::vector<std::string> out;
  std::shared_lock lock(map_mu_);
  std::string start = Key(project, std::max(previous, prefix));
  auto it = previous.empty() || previous < prefix ? queues_.lower_bound(start)
                                                  : queues_.upper_bound(start);
  std::string want = Key(project, prefix);
  for (; it != queues_.end() && static_cast<int>(out.size()) < per_page; ++it) {
    if (it->first.compare(0, want.size(), want) != 0) break;
    out.push_back(it->first.substr(project.size()));
  }
  return out;
}

Result<QueueInfo> Engine::GetQueue(const std::string& project, const std::string& name) const {
  auto slot = Find(project, name);
  if (!slot) return Fail(QueueNotFound());
  std::lock_guard lock(slot->mu);
  if (slot->deleted) return Fail(QueueNotFound());
  return InfoOf(*slot);
}

QueueInfo Engine::InfoOf(const Slot& slot) {
  const auto& q = slot.queue;
  return QueueInfo{q.record(), SizeOf(slot), q.total_messages()};
}

uint64_t Engine::SizeOf(const Slot& slot) {
  return slot.queue.record().push() ? slot.plans.size() : slot.queue.size();
}

Result<void> Engine::ApplySettings(store::QueueRecord& r, const QueueSettings& s,
                                   bool creating) const {
  std::string type = s.type.value_or(creating && s.has_push() ? "multicast" : r.type);
  if (type != "pull" && type != "unicast" && type != "multicast")
    return Fail(Error::InvalidArgument("type must be pull, unicast or multicast"));
  if (type != r.type && !creating)
    return Fail(Error::InvalidArgument("Queue type cannot be changed"));
  r.type = type;
  if (r.push()) {
    if (s.dead_letter_queue && !s.dead_letter_queue->empty())
      return Fail(
          Error::InvalidArgument("Push queues do not support dead_letter: use push.error_queue"));
    if (s.subscribers) {
      if (auto v = ValidateSubscribers(*s.subscribers, r.project_id, r.name, r.subscribers); !v)
        return v;
      r.subscribers = *s.subscribers;
    }
    if (r.subscribers.empty())
      return Fail(Error::InvalidArgument("A push queue needs at least one subscriber"));
    if (s.retries) {
      if (auto v = CheckRange("retries", *s.retries, 0, kMaxRetries); !v) return v;
      r.retries = *s.retries;
    }
    if (s.retries_delay) {
      if (auto v =
              CheckRange("retries_delay", *s.retries_delay, kMinRetriesDelay, kMaxRetriesDelay);
          !v)
        return v;
      r.retries_delay = *s.retries_delay;
    }
    if (s.error_queue) {
      if (*s.error_queue == r.name)
        return Fail(Error::InvalidArgument("A queue cannot be its own error queue"));
      if (!s.error_queue->empty()) {
        if (auto v = ValidateQueueName(*s.error_queue); !v) return v;
      }
      r.error_queue = *s.error_queue;
    }
  } else if (s.has_push()) {
    return Fail(Error::InvalidArgument(
        "Subscribers, retries and error_queue are for push queues (type unicast or multicast)"));
  }
  if (s.alerts && !s.alerts->empty()) {
    if (r.push()) return Fail(Error::InvalidArgument("Push queues do not support alerts."));
    if (auto v = AddAlerts(r.alerts, *s.alerts, r.name); !v) return v;
  }
  if (s.message_timeout) {
    if (auto v = CheckRange("message_timeout", *s.message_timeout, kMinTimeout, kMaxTimeout); !v)
      return v;
    r.message_timeout = *s.message_timeout;
  }
  if (s.message_expiration) {
    if (auto v =
            CheckRange("message_expiration", *s.message_expiration, kMinExpiration, kMaxExpiration);
        !v)
      return v;
    r.message_expiration = *s.message_expiration;
  }
  if (s.max_reservations) {
    if (auto v = CheckRange("max_reservations", *s.max_reservations, 1, kMaxReservationsLimit); !v)
      return v;
    r.max_reservations = *s.max_reservations;
  }
  if (s.dead_letter_queue) {
    if (*s.dead_letter_queue == r.name)
      return Fail(Error::InvalidArgument("A queue cannot be its own dead letter queue"));
    if (!s.dead_letter_queue->empty()) {
      if (auto v = ValidateQueueName(*s.dead_letter_queue); !v) return v;
    }
    r.dead_letter_queue = *s.dead_letter_queue;
  }
  if (s.max_reservations && !s.dead_letter_queue && r.dead_letter_queue.empty())
    return Fail(Error::InvalidArgument(
        "dead_letter needs a queue_name: this queue has no dead letter queue"));
  return Ok();
}

Result<QueueInfo> Engine::PutQueue(const std::string& project, const std::string& name,
                                   const QueueSettings& s) {
  bool created = false;
  auto slot = FindOrCreate(project, name, &s, &created);  // a bad request leaves nothing behind
  if (!slot) return Fail(slot.error());
  std::lock_guard lock((*slot)->mu);
  if ((*slot)->deleted) return Fail(QueueNotFound());
  if (created) return InfoOf(**slot);
  auto rec = (*slot)->queue.record();
  // PUT is idempotent: alerts the queue has already (the same in every
  // field) are not added again, nor refused as duplicates.
  QueueSettings settings = s;
  if (settings.alerts)
    std::erase_if(*settings.alerts, [&](const store::Alert& a) {
      return std::any_of(rec.alerts.begin(), rec.alerts.end(), [&](const store::Alert& h) {
        return h.type == a.type && h.direction == a.direction && h.trigger == a.trigger &&
               h.queue == a.queue && h.snooze == a.snooze;
      });
    });
  if (auto v = ApplySettings(rec, settings, false); !v) return Fail(v.error());
  if (auto w = store_.PutQueue(rec); !w) return Fail(w.error());
  (*slot)->queue.record() = rec;
  if (s.subscribers) FollowSubscribersLocked(*slot);
  return InfoOf(**slot);
}

Result<QueueInfo> Engine::UpdateQueue(const std::string& project, const std::string& name,
                                      const QueueSettings& s) {
  auto slot = Find(project, name);
  if (!slot) return Fail(QueueNotFound());
  std::lock_guard lock(slot->mu);
  if (slot->deleted) return Fail(QueueNotFound());
  auto rec = slot->queue.record();
  if (auto v = ApplySettings(rec, s, false); !v) return Fail(v.error());
  if (auto w = store_.PutQueue(rec); !w) return Fail(w.error());
  slot->queue.record() = rec;
  // As through the subscriber endpoints.
  if (s.subscribers) FollowSubscribersLocked(slot);
  return InfoOf(*slot);
}

Result<void> Engine::DeleteQueue(const std::string& project, const std::string& name) {
  SlotPtr slot = Find(project, name);
  if (!slot) return Fail(QueueNotFound());
  uint64_t qid;
  {
    std::lock_guard lock(slot->mu);
    qid = slot->queue.record().qid;
  }
  // Written first: a delete the store refuses (a failed store) leaves the
  // queue as it was, rather than gone from memory and whole on disk.
  store::MessageBatch batch;
  batch.DropQueue(qid);
  if (auto r = CommitAndWait(std::move(batch)); !r) return r;
  {
    std::unique_lock lock(map_mu_);
    auto it = queues_.find(Key(project, name));
    if (it == queues_.end() || it->second != slot)
      return Fail(QueueNotFound());  // deleted meanwhile
    queues_.erase(it);
    if (auto n = per_project_.find(project); n != per_project_.end() && --n->second == 0)
      per_project_.erase(n);
  }
  {
    std::lock_guard lock(slot->mu);
    slot->deleted = true;
    slot->queue.Clear();
    slot->queue.WakeWaiters();
  }
  // Whatever was written after the drop and before the queue was marked
  // deleted (a post, a settings write that would bring the record back)
  // goes too, synced: the delete was answered.
  store::MessageBatch sweep;
  sweep.DropQueue(qid);
  CommitAndWait(std::move(sweep));
  return Ok();
}

Result<void> Engine::CommitAndWait(store::MessageBatch batch) {
  std::promise<Result<void>> done;
  auto future = done.get_future();
  // Through the committer, although this thread waits anyway: the
  // committer runs each group's completions before it writes the next, so
  // this returns only after every earlier Commit's completion has run
  // (Flush is a barrier for the posts before it).
  store_.Commit(
      std::move(batch), [&done](Result<void> r) { done.set_value(std::move(r)); },
      store::Store::Writer::kCommitter);
  return future.get();
}

void Engine::Post(const std::string& project, const std::string& name,
                  std::vector<NewMessage> messages, PostDone done, store::Store::Writer writer) {
  if (messages.empty()) return done(Fail(Error::InvalidArgument("No messages to post")));
  if (messages.size() > kMaxBatch)
    return done(Fail(Error::InvalidArgument("At most 100 messages can be posted at once")));
  for (const auto& m : messages) {
    if (auto v = CheckRange("delay", m.delay, 0, kMaxDelay); !v) return done(Fail(v.error()));
    if (auto v = ValidatePushHeaders(m.push_headers); !v) return done(Fail(v.error()));
    if (!IsUtf8(m.body)) {
      // A pull queue's messages travel as JSON strings; a push queue (its
      // type never changes) delivers the bytes as they are.
      bool push = false;
      if (auto slot = Find(project, name)) {
        std::lock_guard lock(slot->mu);
        push = slot->queue.record().push();
      }
      if (!push)
        return done(Fail(Error::InvalidArgument(
            "Message body is not valid UTF-8: a pull queue's messages are JSON strings (send "
            "binary data base64-encoded, or to a push queue)")));
    }
    if (m.hops > kMaxHops)
      return done(Fail(Error::InvalidArgument(
          "Message passed on through more than " + std::to_string(kMaxHops) +
          " queues (push subscribers, webhooks or alerts feeding each other?)")));
    if (m.spread > kMaxSpread)
      return done(Fail(Error::InvalidArgument(
          "Message copied more than " + std::to_string(kMaxSpread) +
          " times by push queues or alerts on its way here (queues feeding each other?)")));
    if (m.body.size() > options_.max_message_bytes)
      return done(Fail(Error::TooLarge("Message body exceeds " +
                                       std::to_string(options_.max_message_bytes) + " bytes")));
  }
  if (uint64_t cap = options_.max_messages_per_project) {
    // Against the count of the last Tick plus the posts taken since (a
    // refused write among them counts until the next Tick).
    std::lock_guard lock(sizes_mu_);
    uint64_t& held = project_sizes_[project];
    if (held + messages.size() > cap)
      return done(Fail(Error::PermissionDenied(
          "a project's queues hold at most " + std::to_string(cap) +
          " messages (kiln serve --max-messages-per-project): reserve and delete some first")));
    held += messages.size();
  }
  PostChecked(project, name, std::move(messages), std::move(done), writer, {});
}

void Engine::PostChecked(const std::string& project, const std::string& name,
                         std::vector<NewMessage> messages, PostDone done,
                         store::Store::Writer writer, store::MessageBatch batch) {
  // A post makes its queue: one that meets the queue as it is deleted
  // makes it anew, as a post just after the delete would.
  SlotPtr slot;
  for (int tries = 0; tries < 3; ++tries) {
    auto found = FindOrCreate(project, name);
    if (!found) return done(Fail(found.error()));
    slot = *found;
    std::lock_guard lock(slot->mu);
    if (!slot->deleted) break;
  }

  TimeMs now = clock_.NowMs();
  std::vector<store::MessageState> states;
  std::vector<PushPlan> plans;  // push queues: one per message
  states.reserve(messages.size());
  uint64_t qid = 0, clears = 0, edits = 0;
  std::optional<PushPlan> fresh;  // push queues: the plan every new message starts with
  {
    // Only what needs the queue is done under its lock: deliveries under
    // way need it for their answers.
    std::lock_guard lock(slot->mu);
    if (slot->deleted) return done(Fail(QueueNotFound()));
    const auto& rec = slot->queue.record();
    qid = rec.qid;
    clears = slot->clears;
    edits = slot->subscriber_edits;
    if (rec.push()) fresh = NewPlan(rec, {}, now);
    for (auto& m : messages) {
      store::MessageState s;
      s.id = NextMessageId();
      s.visible_at = m.delay > 0 ? now + Seconds(m.delay) : 0;
      s.expires_at = now + Seconds(rec.message_expiration);
      states.push_back(s);
      slot->queue.CountPosted();
    }
    slot->total_dirty = true;
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    auto& m = messages[i];
    const auto& s = states[i];
    if (fresh) {
      PushPlan& plan = plans.emplace_back(*fresh);
      plan.headers = std::move(m.push_headers);
      plan.hops = m.hops;
      plan.spread = m.spread;
      plan.expires_at = s.expires_at;
      for (auto& d : plan.deliveries) d.next_try_at = s.visible_at ? s.visible_at : now;
      batch.PutPlan(qid, s.id, EncodePlan(plan));
      if (held_body_bytes_.load(std::memory_order_relaxed) + m.body.size() <= kHeldBodyBudget)
        plan.body = HeldBody(m.body, &held_body_bytes_);
    }
    batch.Put(qid, s, std::move(m.body));
  }
  int hops = 0, spread = 1;
  for (const auto& m : messages) {
    hops = std::max(hops, m.hops);
    spread = std::max(spread, m.spread);
  }
  store_.Commit(
      std::move(batch),
      [this, slot, qid, clears, edits, hops, spread, states = std::move(states),
       plans = std::move(plans), done = std::move(done)](Result<void> r) mutable {
        if (!r) {
          // Refused (a full disk, a closing store): total_messages counts
          // only the posts that were taken.
          {
            std::lock_guard lock(slot->mu);
            slot->queue.UncountPosted(states.size());
            slot->total_dirty = true;
          }
          return done(Fail(r.error()));
        }
        std::vector<uint64_t> ids;
        ids.reserve(states.size());
        Notices notices;
        std::string project;
        {
          std::lock_guard lock(slot->mu);
          TimeMs now = clock_.NowMs();
          project = slot->queue.record().project_id;
          if (slot->deleted || slot->clears != clears) {
            // Cleared (or deleted) while this post was written: the post
            // came first, and the clear took its messages.
            store::MessageBatch gone;
            for (const auto& s : states) gone.Delete(qid, s.id, !plans.empty());
            store_.Append(std::move(gone));
            plans.clear();
          } else {
            if (plans.empty()) {
              for (const auto& s : states) slot->queue.Add(s, now);
              slot->queue.WakeWaiters(states.size());
              notices = CheckAlerts(*slot, now, hops, spread);
            } else {
              for (size_t i = 0; i < states.size(); ++i) {
                if (slot->subscriber_edits != edits)
                  FollowSubscribers(plans[i], slot->queue.record(), now);
                slot->plans.emplace(states[i].id, std::move(plans[i]));
              }
            }
          }
        }
        for (const auto& s : states) ids.push_back(s.id);
        bool push = !plans.empty();
        done(ids);
        if (!notices.empty()) PostNotices(project, std::move(notices));
        if (push) StartPushes(slot, ids);
      },
      writer);
}

Result<std::vector<Message>> Engine::Reserve(const std::string& project, const std::string& name,
                                             const ReserveOptions& o,
                                             std::shared_ptr<Waiter> waiter) {
  if (auto v = CheckRange("n", o.n, 1, kMaxBatch); !v) return Fail(v.error());
  if (o.timeout) {
    if (auto v = CheckRange("timeout", *o.timeout, kMinTimeout, kMaxTimeout); !v)
      return Fail(v.error());
  }
  auto slot = Find(project, name);
  if (!slot) return Fail(QueueNotFound());

  std::vector<Message> out;
  std::vector<store::MessageState> dead;
  std::string dlq;
  Notices notices;
  uint64_t qid, clears = 0;
  bool push;
  store::MessageBatch batch;
  std::optional<Error> failed;  // a body could not be read
  {
    std::lock_guard lock(slot->mu);
    if (slot->deleted) return Fail(QueueNotFound());
    Queue& q = slot->queue;
    const auto& rec = q.record();
    qid = rec.qid;
    push = rec.push();
    dlq = rec.dead_letter_queue;
    clears = slot->clears;
    TimeMs now = clock_.NowMs();
    if (size_t due = q.Tick(now)) q.WakeWaiters(due);  // others may be parked for what came due
    TimeMs until = now + Seconds(o.timeout.value_or(rec.message_timeout));
    while (static_cast<int>(out.size()) < o.n) {
      auto s = q.PopReady();
      if (!s) break;
      if (s->expires_at <= now) {
        q.Remove(s->id);
        batch.Delete(qid, s->id, push);
        continue;
      }
      if (!dlq.empty() && s->reserved_count >= static_cast<uint64_t>(rec.max_reservations)) {
        q.Remove(s->id);
        dead.push_back(*s);
        continue;
      }
      auto body = store_.GetBody(qid, s->id);
      if (!body && body.error().code() == ErrorCode::kNotFound) {
        // Not in the store (removed by a write the index missed): nothing
        // to return, and nothing to keep in the index either.
        q.Remove(s->id);
        batch.Delete(qid, s->id, push);
        continue;
      }
      if (!body) {
        // The index and the store disagree; put the message back rather than
        // lose it, and stop here: what was taken so far is still recorded
        // and returned (expired ones removed, dead ones moved).
        q.Release(s->id, now, now);
        failed = body.error();
        break;
      }
      Message m{s->id, std::move(*body), s->reserved_count + 1, {}};
      if (o.delete_messages) {
        q.Remove(s->id);
        batch.Delete(qid, s->id, push);
      } else {
        uint64_t token = RandomU64() | 1;
        batch.PutState(qid, q.Reserve(s->id, token, until, true));
        m.reservation_id = FormatReservationId(s->id, token);
      }
      out.push_back(std::move(m));
    }
    if (out.empty() && waiter && !failed) {
      if (waking_all_)
        waiter->wake();  // the server is stopping: a waiter parked now would sleep its wait out
      else
        q.AddWaiter(std::move(waiter));
    }
    notices = CheckAlerts(*slot, now);
    // Under the lock: the store sees a message's changes in the order the
    // index made them (a release racing this reserve, say).
    if (!batch.empty()) store_.Append(std::move(batch));
  }
  if (!notices.empty()) PostNotices(project, std::move(notices));
  if (!dead.empty()) MoveToDeadLetter(project, dlq, slot, clears, std::move(dead));
  if (out.empty() && failed) return Fail(*failed);
  return out;
}

void Engine::MoveToDeadLetter(const std::string& project, const std::string& dlq,
                              const SlotPtr& from, uint64_t from_clears,
                              std::vector<store::MessageState> states) {
  uint64_t from_qid = 0;
  bool from_push = false;
  {
    std::lock_guard lock(from->mu);
    from_qid = from->queue.record().qid;
    from_push = from->queue.record().push();
  }
  // A move that cannot be made now (the dead letter queue cannot be made,
  // the store failed) puts the messages back for a later reserve to try
  // again: delayed a little, so that a long poll does not take them back
  // at once, fail again and spin for its whole wait.
  auto restore = [this, project, from, from_clears](const std::vector<store::MessageState>& back) {
    if (back.empty()) return;
    Notices notices;
    {
      std::lock_guard lock(from->mu);
      if (from->deleted || from->clears != from_clears) return;  // taken by the clear
      TimeMs now = clock_.NowMs();
      for (auto s : back) {
        s.visible_at = now + kDeadLetterRetryMs;
        s.reservation = 0;
        from->queue.Add(s, now);
      }
      notices = CheckAlerts(*from, now);
    }
    if (!notices.empty()) PostNotices(project, std::move(notices));
  };
  auto slot = FindOrCreate(project, dlq);
  if (!slot) return restore(states);
  TimeMs now = clock_.NowMs();
  store::MessageBatch batch;
  std::vector<store::MessageState> moved, originals, kept;
  std::vector<PushPlan> plans;  // a push queue as the DLQ delivers what it gets
  uint64_t dlq_qid = 0, clears = 0, edits = 0;
  {
    std::lock_guard lock((*slot)->mu);
    Queue& q = (*slot)->queue;
    const auto& rec = q.record();
    dlq_qid = rec.qid;
    clears = (*slot)->clears;
    edits = (*slot)->subscriber_edits;
    if ((*slot)->deleted) kept = states;  // deleted meanwhile
    for (auto s : (*slot)->deleted ? std::vector<store::MessageState>{} : states) {
      auto body = store_.GetBody(from_qid, s.id);
      if (!body) {
        if (body.error().code() != ErrorCode::kNotFound) kept.push_back(s);
        continue;
      }
      originals.push_back(s);
      s.visible_at = 0;
      s.reservation = 0;
      s.expires_at = now + Seconds(rec.message_expiration);
      // Delete and put ride in one batch: the message is in exactly one queue.
      batch.Delete(from_qid, s.id, from_push);
      if (rec.push()) {
        plans.push_back(NewPlan(rec, {}, now));
        plans.back().expires_at = s.expires_at;
        batch.PutPlan(rec.qid, s.id, EncodePlan(plans.back()));
      }
      batch.Put(rec.qid, s, std::move(*body));
      moved.push_back(s);
      q.CountPosted();
    }
    batch.SetTotal(rec.qid, q.total_messages());
  }
  restore(kept);
  if (moved.empty()) return;
  // Indexed once written, so that a reserve never looks for a body that is
  // not in the store yet.
  store_.Commit(
      std::move(batch),
      [this, project, slot = *slot, moved, originals, restore, dlq_qid, clears, edits,
       plans = std::move(plans)](Result<void> r) mutable {
        if (!r) return restore(originals);
        Notices notices;
        {
          std::lock_guard lock(slot->mu);
          if (slot->deleted || slot->clears != clears) {  // as for a post (Slot::clears)
            store::MessageBatch gone;
            for (const auto& s : moved) gone.Delete(dlq_qid, s.id, !plans.empty());
            store_.Append(std::move(gone));
            return;
          }
          TimeMs at = clock_.NowMs();
          if (plans.empty()) {
            for (const auto& s : moved) slot->queue.Add(s, at);
            slot->queue.WakeWaiters(moved.size());
            notices = CheckAlerts(*slot, at);
          } else {
            for (size_t i = 0; i < moved.size(); ++i) {
              if (slot->subscriber_edits != edits)
                FollowSubscribers(plans[i], slot->queue.record(), at);
              slot->plans.emplace(moved[i].id, std::move(plans[i]));
            }
          }
        }
        PostNotices(project, std::move(notices));
        if (!plans.empty()) {
          std::vector<uint64_t> ids;
          for (const auto& s : moved) ids.push_back(s.id);
          StartPushes(slot, ids);
        }
      },
      store::Store::Writer::kCommitter);
}

bool Engine::CancelWait(const std::string& project, const std::string& name, Waiter* waiter) {
  auto slot = Find(project, name);
  if (!slot) return false;
  std::lock_guard lock(slot->mu);
  return slot->queue.RemoveWaiter(waiter);
}

void Engine::PassWake(const std::string& project, const std::string& name) {
  auto slot = Find(project, name);
  if (!slot) return;
  std::lock_guard lock(slot->mu);
  slot->queue.WakeWaiters(1);
}

Result<std::vector<Message>> Engine::Peek(const std::string& project, const std::string& name,
                                          int n) {
  if (auto v = CheckRange("n", n, 1, kMaxBatch); !v) return Fail(v.error());
  auto slot = Find(project, name);
  if (!slot) return Fail(QueueNotFound());
  std::lock_guard lock(slot->mu);
  if (slot->deleted) return Fail(QueueNotFound());
  TimeMs now = clock_.NowMs();
  if (size_t due = slot->queue.Tick(now)) slot->queue.WakeWaiters(due);  // parked for what came due
  std::vector<Message> out;
  for (const auto& s : slot->queue.PeekReady(static_cast<size_t>(n) + 16)) {
    if (static_cast<int>(out.size()) == n) break;
    if (s.expires_at <= now) continue;
    auto body = store_.GetBody(slot->queue.record().qid, s.id);
    if (!body && body.error().code() == ErrorCode::kNotFound) continue;  // as reserve skips it
    if (!body) return Fail(body.error());
    out.push_back({s.id, std::move(*body), s.reserved_count, {}});
  }
  return out;
}

Result<Message> Engine::GetMessage(const std::string& project, const std::string& name,
                                   uint64_t id) {
  auto slot = Find(project, name);
  if (!slot) return Fail(QueueNotFound());
  std::lock_guard lock(slot->mu);
  if (slot->deleted) return Fail(QueueNotFound());
  if (slot->queue.record().push()) {
    if (!slot->plans.count(id)) return Fail(MessageNotFound());
    auto body = store_.GetBody(slot->queue.record().qid, id);
    if (!body) return Fail(body.error());
    return Message{id, std::move(*body), 0, {}};
  }
  auto s = slot->queue.Find(id);
  if (!s || s->expires_at <= clock_.NowMs()) return Fail(MessageNotFound());
  auto body = store_.GetBody(slot->queue.record().qid, id);
  if (!body) return Fail(body.error());
  return Message{id, std::move(*body), s->reserved_count, {}};
}

Result<store::MessageState> Engine::CheckReservation(const Queue& q, const DeleteRef& ref,
                                                     TimeMs now) const {
  auto s = q.Find(ref.id);
  if (!s) return Fail(MessageNotFound());
  bool reserved = s->reservation != 0 && s->visible_at > now;
  if (ref.reservation_id.empty()) {
    if (reserved) return Fail(ReservationMismatch());
    return *s;
  }
  uint64_t token = 0;
  if (!reserved || !ParseReservationId(ref.reservation_id, ref.id, &token) ||
      token != s->reservation)
    return Fail(ReservationMismatch());
  return *s;
}

Result<void> Engine::DeleteMessage(const std::string& project, const std::string& name,
                                   const DeleteRef& ref) {
  if (!ref.subscriber_name.empty())
    return AcknowledgePush(project, name, ref.id, ref.reservation_id, ref.subscriber_name);
  if (!ref.reservation_id.empty()) {
    // On a push queue (its type never changes) a delete with a reservation
    // acknowledges the one delivery that got it (a 202), as with the
    // subscriber's name; without a reservation it cancels the message.
    bool push = false;
    if (auto slot = Find(project, name)) {
      std::lock_guard lock(slot->mu);
      push = slot->queue.record().push();
    }
    if (push) return AcknowledgePush(project, name, ref.id, ref.reservation_id, "");
  }
  return DeleteMessages(project, name, {ref});
}

Result<void> Engine::DeleteMessages(const std::string& project, const std::string& name,
                                    const std::vector<DeleteRef>& refs) {
  if (refs.size() > static_cast<size_t>(kMaxBatch))
    return Fail(Error::InvalidArgument("At most 100 messages can be deleted at once"));
  auto slot = Find(project, name);
  if (!slot) return Fail(QueueNotFound());
  bool acknowledges = std::any_of(refs.begin(), refs.end(), [](const DeleteRef& r) {
    return !r.reservation_id.empty() || !r.subscriber_name.empty();
  });
  if (acknowledges) {
    bool push = false;
    {
      std::lock_guard lock(slot->mu);
      push = slot->queue.record().push();  // a queue's type never changes
    }
    if (push) return AcknowledgeOrCancel(project, name, refs);
  }
  store::MessageBatch batch;
  Notices notices;
  {
    std::lock_guard lock(slot->mu);
    if (slot->deleted) return Fail(QueueNotFound());
    Queue& q = slot->queue;
    if (q.record().push()) {  // cancels the deliveries
      for (const auto& ref : refs)
        if (!slot->plans.count(ref.id)) return Fail(MessageNotFound());
      for (const auto& ref : refs) {
        slot->plans.erase(ref.id);
        batch.Delete(q.record().qid, ref.id, true);
      }
      store_.Append(std::move(batch));
      return Ok();
    }
    TimeMs now = clock_.NowMs();
    for (const auto& ref : refs) {
      if (auto c = CheckReservation(q, ref, now); !c) return Fail(c.error());
    }
    for (const auto& ref : refs) {
      q.Remove(ref.id);
      batch.Delete(q.record().qid, ref.id, q.record().push());
    }
    notices = CheckAlerts(*slot, now);
    store_.Append(std::move(batch));  // under the lock, in the index's order
  }
  PostNotices(project, std::move(notices));
  return Ok();
}

Result<void> Engine::AcknowledgeOrCancel(const std::string& project, const std::string& name,
                                         const std::vector<DeleteRef>& refs) {
  // The cancels' messages are looked for first: a batch that would stop at
  // an unknown id stops before it has acknowledged anything.
  if (auto slot = Find(project, name)) {
    std::lock_guard lock(slot->mu);
    for (const auto& ref : refs)
      if (ref.reservation_id.empty() && ref.subscriber_name.empty() && !slot->plans.count(ref.id))
        return Fail(MessageNotFound());
  }
  std::vector<DeleteRef> cancels;
  for (const auto& ref : refs) {
    if (ref.reservation_id.empty() && ref.subscriber_name.empty()) {
      cancels.push_back(ref);
      continue;
    }
    if (auto r = AcknowledgePush(project, name, ref.id, ref.reservation_id, ref.subscriber_name);
        !r)
      return r;
  }
  if (cancels.empty()) return Ok();
  return DeleteMessages(project, name, cancels);
}

Result<void> Engine::Clear(const std::string& project, const std::string& name) {
  auto slot = Find(project, name);
  if (!slot) return Fail(QueueNotFound());
  Notices notices;
  {
    std::lock_guard lock(slot->mu);
    if (slot->deleted) return Fail(QueueNotFound());
    slot->queue.Clear();
    slot->plans.clear();
    slot->finished.clear();
    ++slot->clears;
    store::MessageBatch batch;
    batch.Clear(slot->queue.record().qid);
    store_.Append(std::move(batch));
    notices = CheckAlerts(*slot, clock_.NowMs());
  }
  PostNotices(project, std::move(notices));
  return Ok();
}

Result<std::string> Engine::Touch(const std::string& project, const std::string& name, uint64_t id,
                                  const std::string& reservation_id,
                                  std::optional<int64_t> timeout) {
  if (timeout) {
    if (auto v = CheckRange("timeout", *timeout, kMinTimeout, kMaxTimeout); !v)
      return Fail(v.error());
  }
  auto slot = Find(project, name);
  if (!slot) return Fail(QueueNotFound());
  store::MessageBatch batch;
  std::string rid;
  {
    std::lock_guard lock(slot->mu);
    if (slot->deleted) return Fail(QueueNotFound());
    Queue& q = slot->queue;
    TimeMs now = clock_.NowMs();
    if (auto c = CheckReservation(q, {id, reservation_id}, now); !c) return Fail(c.error());
    // Touch and release need the current reservation (contract §2.3): one
    // missing, on a message that is not reserved, is as stale as a wrong one.
    if (reservation_id.empty()) return Fail(ReservationMismatch());
    uint64_t token = RandomU64() | 1;
    TimeMs until = now + Seconds(timeout.value_or(q.record().message_timeout));
    batch.PutState(q.record().qid, q.Reserve(id, token, until, true));
    rid = FormatReservationId(id, token);
    store_.Append(std::move(batch));  // under the lock, in the index's order
  }
  return rid;
}

Result<void> Engine::Release(const std::string& project, const std::string& name, uint64_t id,
                             const std::string& reservation_id, int64_t delay) {
  if (auto v = CheckRange("delay", delay, 0, kMaxDelay); !v) return Fail(v.error());
  auto slot = Find(project, name);
  if (!slot) return Fail(QueueNotFound());
  store::MessageBatch batch;
  {
    std::lock_guard lock(slot->mu);
    if (slot->deleted) return Fail(QueueNotFound());
    Queue& q = slot->queue;
    TimeMs now = clock_.NowMs();
    if (auto c = CheckReservation(q, {id, reservation_id}, now); !c) return Fail(c.error());
    if (reservation_id.empty()) return Fail(ReservationMismatch());  // as for touch
    batch.PutState(q.record().qid, q.Release(id, now + Seconds(delay), now));
    if (delay == 0) q.WakeWaiters(1);
    store_.Append(std::move(batch));  // under the lock, before a woken reserve's
  }
  return Ok();
}

void Engine::Tick() {
  std::vector<SlotPtr> slots;
  {
    std::shared_lock lock(map_mu_);
    slots.reserve(queues_.size());
    for (auto& [k, s] : queues_) slots.push_back(s);
  }
  TimeMs now = clock_.NowMs();
  std::unordered_map<std::string, uint64_t> sizes;  // of each project, for Post's limit
  for (auto& slot : slots) {
    store::MessageBatch batch;
    Notices notices;
    std::string project;
    {
      std::lock_guard lock(slot->mu);
      if (slot->deleted) continue;
      project = slot->queue.record().project_id;
      if (options_.max_messages_per_project) sizes[project] += SizeOf(*slot);
      Queue& q = slot->queue;
      size_t due = q.Tick(now);
      // Messages expire in about the order they were posted, so the expired
      // ones gather at the head of the ready list.
      for (;;) {
        auto head = q.PeekReady(1);
        if (head.empty() || head[0].expires_at > now) break;
        q.PopReady();
        q.Remove(head[0].id);
        batch.Delete(q.record().qid, head[0].id, q.record().push());
      }
      // And those that expire out of posting order.
      if (!q.record().push())
        for (uint64_t id : q.SweepExpired(now)) batch.Delete(q.record().qid, id, false);
      if (due) q.WakeWaiters(due);
      if (!batch.empty()) notices = CheckAlerts(*slot, now);
      if (slot->total_dirty) {
        batch.SetTotal(q.record().qid, q.total_messages());
        slot->total_dirty = false;
      }
      if (!batch.empty()) store_.Append(std::move(batch));  // under the lock, in order
    }
    if (!notices.empty()) PostNotices(project, std::move(notices));
  }
  if (options_.max_messages_per_project) {
    std::lock_guard lock(sizes_mu_);
    project_sizes_ = std::move(sizes);
  }
  TickPush(now);
}

Engine::Notices Engine::CheckAlerts(Slot& slot, TimeMs now, int hops, int spread) {
  Notices out;
  uint64_t before = slot.alert_size;
  uint64_t after = SizeOf(slot);
  slot.alert_size = after;
  for (const auto& a : slot.queue.record().alerts) {
    if (!Crosses(a, before, after)) continue;
    auto fired = slot.alert_fired.find(a.id);
    if (fired != slot.alert_fired.end() && now < fired->second + Seconds(a.snooze)) continue;
    slot.alert_fired[a.id] = now;
    out.emplace_back(
        a.queue,
        NewMessage{AlertNotice(a, slot.queue.record().name, after, now), 0, {}, hops + 1, spread});
  }
  // Each notice is a copy of what caused it (up to five alerts fire at once).
  for (auto& [queue, notice] : out) notice.spread = spread * static_cast<int>(out.size());
  const auto& alerts = slot.queue.record().alerts;
  if (slot.alert_fired.size() > alerts.size())  // alerts replaced or removed since they fired
    std::erase_if(slot.alert_fired, [&](const auto& f) {
      return std::none_of(alerts.begin(), alerts.end(),
                          [&](const store::Alert& a) { return a.id == f.first; });
    });
  return out;
}

void Engine::PostNotices(const std::string& project, Notices notices) {
  for (auto& [queue, msg] : notices)
    Post(project, queue, {std::move(msg)}, [project, queue](auto r) {
      if (!r)  // an alert has no one to answer: the log says what was lost
        spdlog::warn("alert notice for queue {} of project {} not posted: {}", queue, project,
                     r.error().message());
    });
}

Result<QueueInfo> Engine::EditRecord(const std::string& project, const std::string& name,
                                     const std::function<Result<void>(store::QueueRecord&)>& edit) {
  auto slot = Find(project, name);
  if (!slot) return Fail(QueueNotFound());
  std::lock_guard lock(slot->mu);
  if (slot->deleted) return Fail(QueueNotFound());
  auto rec = slot->queue.record();
  if (auto r = edit(rec); !r) return Fail(r.error());
  if (auto w = store_.PutQueue(rec); !w) return Fail(w.error());
  slot->queue.record() = rec;
  return InfoOf(*slot);
}

Result<QueueInfo> Engine::ReplaceAlerts(const std::string& project, const std::string& name,
                                        std::vector<store::Alert> alerts) {
  return EditRecord(project, name, [&](store::QueueRecord& r) -> Result<void> {
    if (r.push() && !alerts.empty())
      return Fail(Error::InvalidArgument("Push queues do not support alerts."));
    std::vector<store::Alert> fresh;
    if (auto v = AddAlerts(fresh, std::move(alerts), r.name); !v) return v;
    r.alerts = std::move(fresh);
    return Ok();
  });
}

Result<QueueInfo> Engine::RemoveAlerts(const std::string& project, const std::string& name,
                                       const std::vector<std::string>& ids) {
  return EditRecord(project, name, [&](store::QueueRecord& r) -> Result<void> {
    for (const auto& id : ids) {
      auto it = std::find_if(r.alerts.begin(), r.alerts.end(),
                             [&](const store::Alert& a) { return a.id == id; });
      if (it == r.alerts.end()) return Fail(Error::NotFound("Alert not found: " + id));
      r.alerts.erase(it);
    }
    return Ok();
  });
}

void Engine::WakeAll() {
  waking_all_ = true;  // before any queue's lock: a reserve that parks later sees it
  std::shared_lock lock(map_mu_);
  for (auto& [k, s] : queues_) {
    std::lock_guard l(s->mu);
    s->queue.WakeWaiters();
  }
}

size_t Engine::queue_count() const {
  std::shared_lock lock(map_mu_);
  return queues_.size();
}

size_t Engine::message_count() const {
  std::shared_lock lock(map_mu_);
  size_t n = 0;
  for (auto& [k, s] : queues_) {
    std::lock_guard l(s->mu);
    n += s->queue.size();
  }
  return n;
}

}  // namespace kiln::mq
