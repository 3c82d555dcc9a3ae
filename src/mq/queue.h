// The in-memory index of one pull queue: which messages exist, which are
// ready (served FIFO by id), which are delayed or reserved until a deadline,
// and the long-poll waiters parked on it. Bodies live in the store, not here.
// Pure logic over a time passed in by the caller; no I/O.
// Not thread-safe: mq::Engine guards each Queue with its own mutex.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "store/records.h"

namespace kiln::mq {

// A parked long-poll reserve. `wake` is called (under the queue's lock, so it
// must only schedule work) when messages may have become ready for it.
struct Waiter {
  std::function<void()> wake;
  // Kept by the queue, under its lock: where it is parked (so that leaving
  // is O(1)), on which queue (a queue of the same name made after this one
  // was deleted is another), and whether it was woken.
  bool parked = false, woken = false;
  const void* owner = nullptr;
  std::list<std::shared_ptr<Waiter>>::iterator at;
};

class Queue {
 public:
  explicit Queue(store::QueueRecord record) : record_(std::move(record)) {}

  store::QueueRecord& record() { return record_; }
  const store::QueueRecord& record() const { return record_; }
  uint64_t total_messages() const { return total_; }
  void set_total_messages(uint64_t t) { total_ = t; }
  uint64_t CountPosted() { return ++total_; }
  // Takes back `n` counted posts whose write failed (they were never there).
  void UncountPosted(uint64_t n) { total_ -= std::min(n, total_); }
  size_t size() const { return entries_.size(); }

  // Adds a message in the state it was stored with: ready when it has no
  // reservation and is visible at `now`, otherwise timed.
  void Add(const store::MessageState& s, TimeMs now);

  // The stored state of message `id`, or nullopt.
  std::optional<store::MessageState> Find(uint64_t id) const;

  // Moves delayed messages whose time has come and reservations that ran out
  // back to ready. Returns true when any message became ready.
  size_t Tick(TimeMs now);

  // Removes and returns the next ready message, lowest id first, or nullopt.
  // The message stays in the queue (for Reserve or Remove to finish).
  std::optional<store::MessageState> PopReady();

  // Up to `n` ready message ids in serving order, without taking them.
  std::vector<store::MessageState> PeekReady(size_t n) const;

  // Marks a popped or reserved message reserved until `until` with
  // `reservation`, counting one more reservation when `count` is set.
  store::MessageState Reserve(uint64_t id, uint64_t reservation, TimeMs until, bool count);

  // Makes a reserved message visible at `at` (now or later) with no reservation.
  store::MessageState Release(uint64_t id, TimeMs at, TimeMs now);

  // Removes a message. Its id leaves the ready lists at once when it heads
  // them (or is in ready_front_), else at the next compaction: ids removed
  // out of order (deletes after a peek) do not pile up.
  void Remove(uint64_t id);
  void Clear();

  // Removes expired messages that are not reserved wherever they are in
  // the queue, and returns their ids; the caller's head-of-line check finds
  // those that expire in posting order at once, this the others (a
  // message_expiration lowered, delays past the expiry, dead letters moved
  // in out of order). At most once per kSweepEvery, looking at up to
  // kSweepBudget messages from where the last look stopped: a queue of
  // 1,000,000 is looked through in about a minute, in 65,536-message
  // slices. A reserved one waits for its reservation to end.
  std::vector<uint64_t> SweepExpired(TimeMs now);
  static constexpr TimeMs kSweepEvery = 5'000;
  static constexpr size_t kSweepBudget = 65'536;
  // Ids the ready lists hold, stale ones included (tests, stats).
  size_t ready_backlog() const { return ready_tail_.size() + ready_front_.size(); }
  size_t timed_backlog() const { return timed_.size(); }  // live and stale deadlines

  // The earliest time a timed message becomes visible, or nullopt.
  std::optional<TimeMs> NextDeadline() const;

  // Parked waiters are woken first in, first out: as many as there are new
  // messages (each woken one reserves, and with one message a thousand
  // waiters need not all try), or all of them (a delete, a stop).
  void AddWaiter(std::shared_ptr<Waiter> w);
  // Unparks `w` if it is parked here; whether it had been woken.
  bool RemoveWaiter(Waiter* w);
  void WakeWaiters(size_t n = SIZE_MAX);

 private:
  struct Entry {
    TimeMs visible_at;
    TimeMs expires_at;
    uint64_t reservation;
    uint32_t reserved_count;
  };
  using Timed = std::pair<TimeMs, uint64_t>;  // (visible_at, id)

  void MakeReady(uint64_t id);
  void PushTimed(TimeMs at, uint64_t id);  // compacts the heap when stale entries pile up
  bool Stale(uint64_t id) const;           // a ready-list id no longer ready
  void TrimReady();                        // stale ids off the tail list's head; compacts when many
  store::MessageState StateOf(uint64_t id, const Entry& e) const;

  store::QueueRecord record_;
  uint64_t total_ = 0;
  std::unordered_map<uint64_t, Entry> entries_;
  // Ready ids. New posts arrive in id order and go to the tail; messages that
  // become ready again (released, timed out, delay over) have lower ids and
  // go to `ready_front_`. Both may hold ids removed since (skipped lazily).
  std::deque<uint64_t> ready_tail_;
  std::set<uint64_t> ready_front_;
  std::priority_queue<Timed, std::vector<Timed>, std::greater<Timed>> timed_;
  std::list<std::shared_ptr<Waiter>> waiters_;
  size_t sweep_bucket_ = 0;  // where SweepExpired goes on from (a bucket of entries_)
  TimeMs next_sweep_ = 0;
};

}  // namespace kiln::mq
