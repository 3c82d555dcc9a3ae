// mq::Engine: the IronMQ v3 pull-queue semantics over a Store. Keeps every
// queue's index in memory (mq::Queue) and the store as the durable record:
// posts are committed (fsync'd, group-committed) before they are visible;
// reserve, touch, release and delete ride the log unsynced, so a crash can
// only make a message visible again (docs/storage-format.md).
// Push queues (engine_push.cc) keep a delivery plan per message instead of
// the ready index, and hand requests to a PushTransport.
// Thread-safe. Lock order: the engine's map lock, then one queue's lock,
// then push_mu_ (a leaf); never two queue locks at once (a dead-letter move
// takes them in turn). docs/concurrency.md has the whole picture.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "mq/push.h"
#include "mq/queue.h"
#include "store/store.h"

namespace kiln::mq {

struct EngineOptions {
  size_t max_message_bytes = 64 * 1024;
  // Message ids handed out per write of the store's id floor: one synced
  // write every 2^36 messages (two days at 400,000 a second).
  uint64_t id_lease = uint64_t{1} << 36;
  // Queues a project may have (each costs memory and a look every tick);
  // a post, an update or a dead-letter move that would make one more is
  // refused (403).
  size_t max_queues_per_project = 100'000;
  // Messages a project's queues may hold in all (each costs the index about
  // 100 bytes of memory, and the disk its body): a post that would pass it
  // is refused (403), so that one project cannot take the memory every
  // project shares. Counted anew at every Tick, and each post taken adds
  // its messages meanwhile. 0: no limit.
  uint64_t max_messages_per_project = 10'000'000;
};

// Limits of the wire contract (iron-api.md §1.6).
inline constexpr int64_t kMinTimeout = 30, kMaxTimeout = 86400;
inline constexpr int64_t kMaxDelay = 604800;
inline constexpr int64_t kMinExpiration = 60, kMaxExpiration = 2592000;
inline constexpr int64_t kMaxReservationsLimit = 1000;
// Push queues: bytes of fresh message bodies kept in memory for delivery.
inline constexpr size_t kHeldBodyBudget = 64 << 20;
inline constexpr int kMaxBatch = 100;
inline constexpr int64_t kMaxWait = 30;

// Queue settings as given by a create or update; unset fields keep their
// current (or default) value.
using Headers = std::vector<std::pair<std::string, std::string>>;

inline constexpr int64_t kMaxRetries = 100;
inline constexpr int64_t kMinRetriesDelay = 3, kMaxRetriesDelay = 86400;

struct QueueSettings {
  std::optional<std::string> type;
  std::optional<int64_t> message_timeout;
  std::optional<int64_t> message_expiration;
  std::optional<std::string> dead_letter_queue;  // "" removes it
  std::optional<int64_t> max_reservations;
  // Push queues.
  std::optional<std::vector<store::Subscriber>> subscribers;  // replaces all
  std::optional<int64_t> retries;
  std::optional<int64_t> retries_delay;
  std::optional<std::string> error_queue;           // "" removes it
  std::optional<std::vector<store::Alert>> alerts;  // added to the queue's (pull queues)
  bool has_push() const { return subscribers || retries || retries_delay || error_queue; }
};

struct QueueInfo {
  store::QueueRecord record;
  uint64_t size = 0;
  uint64_t total_messages = 0;
};

struct NewMessage {
  std::string body;
  int64_t delay = 0;     // seconds
  Headers push_headers;  // push queues: added to each delivery
  // Times the message was passed on to get here (an ironmq:// delivery, an
  // alert notice, an error report; from another Kiln, kHopsHeader): past
  // kMaxHops a post is refused, so that queues feeding each other stop.
  int hops = 0;
  // Copies of the client's message that pushes made on the way here: the
  // product of the widths of the multicast queues it came through (their
  // subscribers that may make a message, and their error report) and of the
  // alerts that fired at once, 1 for a client's post. Past kMaxSpread a
  // post is refused, so that queues feeding each other make at most about
  // (kMaxHops + 1) * kMaxSpread messages of one, not width^kMaxHops.
  int spread = 1;
};
inline constexpr int kMaxHops = 10;
inline constexpr int kMaxSpread = 1000;
// A push queue's subscribers, at most: a queue's width.
inline constexpr size_t kMaxSubscribers = 100;
// The request headers that carry a message's hops and spread from one Kiln
// to another: every push delivery sends its message's hops + 1 and the
// spread of its copies, and a post that has them (POST /messages, a
// webhook) starts its messages there.
inline constexpr const char* kHopsHeader = "Kiln-Hops";
inline constexpr const char* kSpreadHeader = "Kiln-Spread";

// Checks push_headers against iron-api.md §2.3 (≤5, names 1-64 bytes and
// not reserved, values 1-1024 bytes). InvalidArgument names the problem.
Result<void> ValidatePushHeaders(const Headers& h);
// Names unique and non-empty, urls http://, https:// or ironmq://, at most
// kMaxSubscribers (a list over it from before may shrink).
// `kept`: the queue's subscribers before the change; one of them unchanged
// (name and url) is not held to checks added since it was stored.
Result<void> ValidateSubscribers(const std::vector<store::Subscriber>& subs,
                                 const std::string& project, const std::string& queue,
                                 const std::vector<store::Subscriber>& kept = {});

// One delivery of a push message, and what makes it. The transport calls
// `done` exactly once, on any thread: an HTTP status, or 0 and an error text.
struct PushRequest {
  std::string project_id;  // of the queue the message is on
  uint64_t qid = 0;        // of that queue: its deliveries share one client thread
  std::string url;
  Headers headers;
  std::string body;
  int hops = 0;    // of the message (NewMessage::hops)
  int spread = 1;  // of the copy it may make (NewMessage::spread)
};
class PushTransport {
 public:
  virtual ~PushTransport() = default;
  virtual void Send(PushRequest request, std::function<void(int, std::string)> done) = 0;
};

struct SubscriberStatus {
  std::string name, url, status, msg;
  int status_code = 0;
  int64_t retries_remaining = 0, tries = 0;
  TimeMs last_try_at = 0;
};

struct Message {
  uint64_t id = 0;
  std::string body;
  uint32_t reserved_count = 0;
  std::string reservation_id;  // set by Reserve only
};

struct ReserveOptions {
  int n = 1;
  std::optional<int64_t> timeout;  // seconds; default: the queue's message_timeout
  bool delete_messages = false;
};

struct DeleteRef {
  uint64_t id = 0;
  std::string reservation_id;   // empty: the message must not be reserved
  std::string subscriber_name;  // push queues: acknowledges that subscriber's 202
};

class Engine {
 public:
  Engine(store::Store& store, const Clock& clock, EngineOptions options = {});
  ~Engine();

  // Rebuilds every queue's index from the store. Call once, before serving.
  Result<void> Recover();

  // Queues. Errors: NotFound ("Queue not found"), InvalidArgument.
  std::vector<std::string> ListQueues(const std::string& project, const std::string& prefix,
                                      const std::string& previous, int per_page) const;
  Result<QueueInfo> GetQueue(const std::string& project, const std::string& name) const;
  // Creates the queue, or applies `s` to it when it exists (PUT is idempotent).
  Result<QueueInfo> PutQueue(const std::string& project, const std::string& name,
                             const QueueSettings& s);
  // Applies `s` to an existing queue; NotFound when missing.
  Result<QueueInfo> UpdateQueue(const std::string& project, const std::string& name,
                                const QueueSettings& s);
  Result<void> DeleteQueue(const std::string& project, const std::string& name);

  // Posts messages (creating a missing queue) and calls `done` with their
  // ids once they are durable, possibly on another thread. `writer`:
  // who writes them when no write is under way (store::Store::Commit).
  // Errors: InvalidArgument (delay, count), TooLarge (body),
  // Unavailable/Internal (store).
  using PostDone = std::function<void(Result<std::vector<uint64_t>>)>;
  void Post(const std::string& project, const std::string& name, std::vector<NewMessage> messages,
            PostDone done, store::Store::Writer writer = store::Store::Writer::kCommitter);

  // Reserves up to `n` ready messages. When none is ready and `waiter` is
  // given, parks it on the queue (its wake is called when messages may be
  // ready) and returns an empty list; call CancelWait when done waiting.
  Result<std::vector<Message>> Reserve(const std::string& project, const std::string& name,
                                       const ReserveOptions& o,
                                       std::shared_ptr<Waiter> waiter = nullptr);
  // Unparks `waiter`; whether it had been woken (for PassWake).
  bool CancelWait(const std::string& project, const std::string& name, Waiter* waiter);
  // A woken waiter that will not reserve (its client went away) hands its
  // wake to the next one parked: a post wakes only as many as it brings.
  void PassWake(const std::string& project, const std::string& name);

  // Ready messages in serving order, without reserving them.
  Result<std::vector<Message>> Peek(const std::string& project, const std::string& name, int n);
  Result<Message> GetMessage(const std::string& project, const std::string& name, uint64_t id);

  // PermissionDenied when the message is reserved and `reservation_id` is
  // not its current, unexpired reservation; NotFound when it does not exist.
  Result<void> DeleteMessage(const std::string& project, const std::string& name,
                             const DeleteRef& ref);
  // All or nothing: when any message fails the check above, none is deleted.
  // On a push queue an item with a reservation (or subscriber) acknowledges
  // that delivery, as DeleteMessage does, in order: the first that fails
  // stops the call (those before it stand) and cancels nothing; the items
  // without one cancel their message once all acknowledgements held.
  Result<void> DeleteMessages(const std::string& project, const std::string& name,
                              const std::vector<DeleteRef>& refs);
  Result<void> Clear(const std::string& project, const std::string& name);
  // Returns the new reservation id.
  Result<std::string> Touch(const std::string& project, const std::string& name, uint64_t id,
                            const std::string& reservation_id, std::optional<int64_t> timeout);
  Result<void> Release(const std::string& project, const std::string& name, uint64_t id,
                       const std::string& reservation_id, int64_t delay);

  // Returns timed-out reservations and finished delays to ready, drops
  // expired messages, and wakes long-pollers. Call a few times a second.
  void Tick();
  // Wakes every parked long poll, and those that would park later (at shutdown).
  void WakeAll();

  // Push queues. SetPushTransport before serving; `public_url` (scheme, host
  // and port of this server) builds Iron-Subscriber-Message-Url.
  void SetPushTransport(PushTransport* transport, std::string public_url);
  // At shutdown, before the transport goes: no delivery starts from now on,
  // and the store's completions already under way (which may start some)
  // have run when this returns. Deliveries left resume at the next start.
  void StopPushes();
  // Subscribers by name: add or update, replace all, remove. InvalidArgument
  // on a pull queue or when no subscriber would be left.
  Result<QueueInfo> AddSubscribers(const std::string& project, const std::string& name,
                                   const std::vector<store::Subscriber>& subs);
  Result<QueueInfo> ReplaceSubscribers(const std::string& project, const std::string& name,
                                       const std::vector<store::Subscriber>& subs);
  Result<QueueInfo> RemoveSubscribers(const std::string& project, const std::string& name,
                                      const std::vector<std::string>& names);
  // Alerts: replace all (an empty list clears them), or remove by id
  // (NotFound for an unknown id).
  Result<QueueInfo> ReplaceAlerts(const std::string& project, const std::string& name,
                                  std::vector<store::Alert> alerts);
  Result<QueueInfo> RemoveAlerts(const std::string& project, const std::string& name,
                                 const std::vector<std::string>& ids);

  // Delivery status of a push message; NotFound once it is delivered or given up.
  Result<std::vector<SubscriberStatus>> PushStatus(const std::string& project,
                                                   const std::string& name, uint64_t id);
  // Acknowledges a subscriber's 202. Needs no token: the reservation id is
  // the secret. PermissionDenied when it does not match a pending 202.
  Result<void> AcknowledgePush(const std::string& project, const std::string& name, uint64_t id,
                               const std::string& reservation_id, const std::string& subscriber);

  // Waits until every write made so far is durable and has completed (its
  // messages indexed). Tests use it; the destructor calls it.
  void Flush();

  size_t queue_count() const;
  size_t message_count() const;

 private:
  // DeleteMessages on a push queue with acknowledgements among `refs`.
  Result<void> AcknowledgeOrCancel(const std::string& project, const std::string& name,
                                   const std::vector<DeleteRef>& refs);
  struct Slot {
    std::mutex mu;
    Queue queue;
    bool deleted = false;
    std::unordered_map<uint64_t, PushPlan> plans;  // push queues: messages being delivered
    // Recently finished push messages, so that clients polling their status
    // see the final one. In memory only: the newest kFinishedKept.
    std::deque<std::pair<uint64_t, PushPlan>> finished;
    // Alerts: the size they last saw, and when each last fired (for snooze).
    uint64_t alert_size = 0;
    std::unordered_map<std::string, TimeMs> alert_fired;
    // The count of messages ever posted changed since it was last written:
    // Tick and Flush write it, not every post (a crash may undercount it).
    bool total_dirty = false;
    // Clears so far. A post whose write overlaps a clear (or the queue's
    // deletion) does not index its messages, and removes them from the
    // store, whichever of the two writes landed first.
    uint64_t clears = 0;
    // Changes of a push queue's subscribers so far. A post (or dead-letter
    // move) whose write overlaps one makes its plans follow the new ones
    // before they are indexed: they were built from the old list.
    uint64_t subscriber_edits = 0;
    explicit Slot(store::QueueRecord r) : queue(std::move(r)) {}
  };
  using SlotPtr = std::shared_ptr<Slot>;

  // Alerts: notices (target queue, message) due after a size change. Call
  // under the slot's lock; post them with PostNotices after releasing it.
  using Notices = std::vector<std::pair<std::string, NewMessage>>;
  // `hops`, `spread`: of the messages whose post changed the size
  // (NewMessage::hops, NewMessage::spread).
  Notices CheckAlerts(Slot& slot, TimeMs now, int hops = 0, int spread = 1);
  void PostNotices(const std::string& project, Notices notices);
  Result<QueueInfo> EditRecord(const std::string& project, const std::string& name,
                               const std::function<Result<void>(store::QueueRecord&)>& edit);

  // Push delivery (engine_push.cc).
  // `off_list`: the key of the host's or project's waiting list the
  // message was just taken off (RestartWaiting), so it may go on it again.
  void StartPush(const SlotPtr& slot, uint64_t id, const std::string* off_list = nullptr);
  void StartPushes(const SlotPtr& slot, std::span<const uint64_t> ids,
                   const std::string* off_list = nullptr);
  struct Limited;
  // Starts what waits on `of[key]`'s list while it is under `limit`.
  void RestartWaiting(std::unordered_map<std::string, Limited>& of, const std::string& key,
                      int limit);
  // The answer to the try of `subscriber` that carried `reservation`.
  void OnPushAnswer(const SlotPtr& slot, const std::string& project, uint64_t id,
                    const std::string& subscriber, uint64_t reservation, std::string host,
                    int status, std::string error);
  // A failed push message's report for the queue's error_queue. It is
  // posted in the same write that removes the message, so a crash keeps
  // either the message (reported again after a restart) or the report.
  struct ErrorNotice {
    std::string queue;
    NewMessage message;
    uint64_t source_qid = 0, source_id = 0;
  };
  // Under the slot's lock: persists the plan, or ends it: removes the
  // message, or when it failed and the queue has an error queue returns the
  // notice whose post removes it (PostErrorNotice, outside the lock).
  std::optional<ErrorNotice> SettlePlan(Slot& slot, uint64_t id, bool persist = true);
  void PostErrorNotice(const std::string& project, std::optional<ErrorNotice> notice);
  void SchedulePush(const SlotPtr& slot, uint64_t id, TimeMs at);
  void TickPush(TimeMs now);
  void FollowSubscribersLocked(const SlotPtr& slot);  // slot->mu held
  Result<QueueInfo> EditSubscribers(
      const std::string& project, const std::string& name,
      const std::function<Result<void>(std::vector<store::Subscriber>&)>& edit);

  static std::string Key(const std::string& project, const std::string& name) {
    return project + name;  // project ids are fixed-length
  }
  // Post past its checks (those of users' posts): the messages, and the
  // operations already in `batch`, in one write.
  void PostChecked(const std::string& project, const std::string& name,
                   std::vector<NewMessage> messages, PostDone done, store::Store::Writer writer,
                   store::MessageBatch batch);
  SlotPtr Find(const std::string& project, const std::string& name) const;
  // The queue, created when missing: with `settings` applied when given
  // (nothing is created when they are invalid), `*created` telling which.
  Result<SlotPtr> FindOrCreate(const std::string& project, const std::string& name,
                               const QueueSettings* settings = nullptr, bool* created = nullptr);
  Result<void> ApplySettings(store::QueueRecord& r, const QueueSettings& s, bool creating) const;
  static QueueInfo InfoOf(const Slot& slot);
  static uint64_t SizeOf(const Slot& slot);  // messages in it (push: plans)
  uint64_t NextMessageId();
  // Blocks until `batch` is durable. For rare operations only (queue delete).
  Result<void> CommitAndWait(store::MessageBatch batch);
  // Moves `states`, just taken out of `from`'s index (cleared `from_clears`
  // times then), into the dead letter queue `dlq`. What cannot be moved
  // (the queue not made, a body unreadable, the write failed) goes back into
  // `from`'s index, to be moved by a later reserve, rather than being lost.
  void MoveToDeadLetter(const std::string& project, const std::string& dlq, const SlotPtr& from,
                        uint64_t from_clears, std::vector<store::MessageState> states);
  // Checks `ref` against the message's state under the queue's lock.
  Result<store::MessageState> CheckReservation(const Queue& q, const DeleteRef& ref,
                                               TimeMs now) const;

  store::Store& store_;
  const Clock& clock_;
  EngineOptions options_;
  mutable std::shared_mutex map_mu_;
  std::mutex create_mu_;                                 // FindOrCreate's creates, one at a time
  std::unordered_map<std::string, size_t> per_project_;  // queues, under map_mu_
  // Messages of each project's queues: at the last Tick, plus posts taken
  // since (max_messages_per_project).
  mutable std::mutex sizes_mu_;
  std::unordered_map<std::string, uint64_t> project_sizes_;  // under sizes_mu_
  std::map<std::string, SlotPtr> queues_;                    // by Key(project, name)
  std::atomic<uint64_t> next_id_{0};
  std::atomic<bool> waking_all_{false};  // WakeAll was called: nobody parks from now on
  // Ids up to id_floor_ may be handed out; the store's floor is kept there
  // (raised by options_.id_lease at a time: see NextMessageId).
  std::mutex id_floor_mu_;
  std::atomic<uint64_t> id_floor_{0};

  std::atomic<PushTransport*> transport_{nullptr};
  std::string public_url_;
  struct PushDue {
    TimeMs at;
    uint64_t id;
    SlotPtr slot;
    bool operator>(const PushDue& o) const { return at > o.at; }
  };
  std::mutex push_mu_;  // leaf lock: the due heap and in-flight counts
  // Bytes of push message bodies held in memory (PushPlan::body), at most
  // kHeldBodyBudget: past it, deliveries read bodies from the store.
  std::atomic<size_t> held_body_bytes_{0};
  std::priority_queue<PushDue, std::vector<PushDue>, std::greater<PushDue>> push_due_;
  // Deliveries under way to a host, or of a project, and the messages held
  // back by its limit, restarted by its answers.
  struct Limited {
    int in_flight = 0;
    std::deque<std::pair<SlotPtr, uint64_t>> waiting;
  };
  std::unordered_map<std::string, Limited> hosts_;  // by "project scheme://host:port"
  // Per project at most half of all, so that one project's many slow hosts
  // cannot hold every other project's back.
  std::unordered_map<std::string, Limited> projects_;
  // Messages held back by the limit of all (kMaxInFlight) alone, by project,
  // and the projects in the order they get the next free slot.
  std::unordered_map<std::string, Limited> global_waiting_;
  std::deque<std::string> global_turns_;  // each project with a waiting message, once
  void RestartGlobal();
  int in_flight_ = 0;
  // Error reports whose post failed (a store error, their queue deleted
  // meanwhile), posted again by the tick 10 s later; at most 10,000, past
  // that they wait for the next start (the message stays in the store).
  struct FailedReport {
    TimeMs at;
    std::string project;
    ErrorNotice notice;
  };
  std::deque<FailedReport> failed_reports_;  // under push_mu_
};

// Reservation ids are 32 hex characters: the message id and a random token.
std::string FormatReservationId(uint64_t id, uint64_t token);
bool ParseReservationId(const std::string& s, uint64_t id, uint64_t* token);

Result<void> ValidateQueueName(const std::string& name);

}  // namespace kiln::mq
