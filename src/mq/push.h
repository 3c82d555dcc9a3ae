// Push delivery plans: for one message on a push queue, which subscribers
// still need it, how often each was tried, and what to do after each answer
// (iron-api.md §2.4). Pure logic over times passed in; no I/O.
// Not thread-safe: a plan lives under its queue's lock in mq::Engine.
// Persisted with the message; format version 1 (docs/storage-format.md).
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "store/records.h"

namespace kiln::mq {

enum class DeliveryStatus { kQueued, kRetrying, kReserved, kDeleted, kError };
const char* StatusName(DeliveryStatus s);

// One subscriber's share of one message.
struct Delivery {
  std::string subscriber;
  DeliveryStatus status = DeliveryStatus::kQueued;
  int64_t retries_remaining = 0;
  int64_t tries = 0;
  int status_code = 0;
  std::string msg;
  TimeMs last_try_at = 0;
  TimeMs next_try_at = 0;    // queued/retrying: when to try; reserved: when the 202 runs out
  uint64_t reservation = 0;  // sent with the latest try; acknowledges a 202
  bool in_flight = false;    // not persisted

  bool final() const {
    return status == DeliveryStatus::kDeleted || status == DeliveryStatus::kError;
  }
};

// A message's body held in memory from its post until its deliveries no
// longer need it, so that delivering a fresh message reads nothing from the
// store. Its bytes count in a total shared by every held body (the engine
// keeps that under a budget). A copy holds nothing (plans are copied only
// to be shown); a move takes the body along.
class HeldBody {
 public:
  HeldBody() = default;
  HeldBody(std::string body, std::atomic<size_t>* total) : body_(std::move(body)), total_(total) {
    total_->fetch_add(body_.size(), std::memory_order_relaxed);
  }
  HeldBody(const HeldBody&) {}
  HeldBody& operator=(const HeldBody& o) {
    if (this != &o) Drop();
    return *this;
  }
  HeldBody(HeldBody&& o) noexcept : body_(std::move(o.body_)), total_(o.total_) {
    o.total_ = nullptr;
  }
  HeldBody& operator=(HeldBody&& o) noexcept {
    if (this != &o) {
      Drop();
      body_ = std::move(o.body_);
      total_ = o.total_;
      o.total_ = nullptr;
    }
    return *this;
  }
  ~HeldBody() { Drop(); }

  // The body, or null when none is held.
  const std::string* get() const { return total_ ? &body_ : nullptr; }
  void Drop() {
    if (!total_) return;
    total_->fetch_sub(body_.size(), std::memory_order_relaxed);
    total_ = nullptr;
    std::string().swap(body_);
  }

 private:
  std::string body_;
  std::atomic<size_t>* total_ = nullptr;
};

struct PushPlan {
  bool unicast = false;
  std::vector<std::pair<std::string, std::string>> headers;  // the message's push_headers
  std::vector<Delivery> deliveries;  // one per subscriber, in the queue's order
  size_t cursor = 0;                 // unicast: the subscriber to try next
  size_t round_start = 0;            // unicast: where the current round began
  int64_t retries_remaining = 0;     // unicast: rounds left after this one
  int hops = 0;                      // of its message (NewMessage::hops)
  int spread = 1;                    // of its message (NewMessage::spread)
  // When its message expires (message_expiration after the post; 0: never,
  // as in a plan of a Kiln before this field until Recover fills it in).
  TimeMs expires_at = 0;
  // The waiting lists (of a host, of a project) it is on for a free slot,
  // each once: a multicast message may wait on several hosts. Not persisted.
  std::vector<std::string> held_on;
  HeldBody body;  // the body, while held in memory; not persisted

  // Every subscriber is done with it (delivered or given up).
  bool Complete() const;
  // Gave up on at least one subscriber (multicast) or on all (unicast).
  bool Failed() const;
  // Indexes of deliveries to start at `now` (not in flight, due).
  std::vector<size_t> Due(TimeMs now) const;
  // The earliest time something is due (a try, or the message's expiry),
  // or nullopt when nothing is pending.
  std::optional<TimeMs> NextDue() const;
};

// A fresh plan for a message posted to queue `q` at `now`.
PushPlan NewPlan(const store::QueueRecord& q,
                 std::vector<std::pair<std::string, std::string>> headers, TimeMs now);

// An answer from subscriber `i`: an HTTP status, or 0 with `error` when the
// request failed (refused, timed out, TLS). `reservation` is the one sent.
void OnAnswer(PushPlan& plan, size_t i, int status, const std::string& error,
              const store::QueueRecord& q, TimeMs now);

// A 202 that was not acknowledged by its deadline (the queue's
// message_timeout) counts as a failed try; the next try is due at once.
void ExpireReservations(PushPlan& plan, const store::QueueRecord& q, TimeMs now);

// Once the message has expired, gives up on every delivery not done, not
// in flight and not holding a 202 (msg "expired before it was delivered"):
// a request under way is still answered, a 202 still acknowledged or timed
// out. True when it gave up on one.
bool ExpirePlan(PushPlan& plan, TimeMs now);

// Acknowledges a 202, or a request still in flight (the subscriber may
// acknowledge before its 202 is read). False when `subscriber` (any, when
// empty: reservations are random per try) has neither with `reservation`.
bool Acknowledge(PushPlan& plan, const std::string& subscriber, uint64_t reservation);

// Brings an unfinished plan in line with the queue's subscribers after
// they changed: deliveries to removed ones are dropped. A unicast plan gains
// the added ones (due at `now`): its message is for any one of them. A
// multicast plan keeps its own recipients, but one left with none (all
// replaced, none reached) goes to the queue's subscribers now, rather than
// being settled as delivered. A unicast plan waiting out retries_delay
// tries an added subscriber at once. True when deliveries were added or
// removed: the caller schedules the plan now, to start what is due or
// settle what the change completed.
bool FollowSubscribers(PushPlan& plan, const store::QueueRecord& q, TimeMs now);

// ironmq://[project_id:token@][host[:port]]/queue, a subscriber that posts
// into another queue. Checked when the subscriber is set: a project id is
// 24 hex, a token is given with it, the host has no path or spaces, and the
// queue name is one a queue may have.
struct IronMqUrl {
  std::string project_id, token, host, queue;  // queue: the code's name for ironworker://
};
std::optional<IronMqUrl> ParseIronMqUrl(std::string_view url);
// ironworker://[project_id:token@][host[:port]]/code_name, a subscriber that
// queues a task of the code with the message's body as its payload. The
// same checks, and a code name of 1-255 bytes without '/', '?' or controls.
std::optional<IronMqUrl> ParseIronWorkerUrl(std::string_view url);
// `url` with the secret of its user info, if any, as "***"
// (ironmq://<project>:***@host/q, https://user:***@host/): for reports that
// leave the queue's settings, such as an error queue's messages.
std::string WithoutSecret(std::string_view url);

std::string EncodePlan(const PushPlan& plan);
std::optional<PushPlan> DecodePlan(std::string_view b);

}  // namespace kiln::mq
