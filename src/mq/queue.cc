#include "mq/queue.h"

#include <algorithm>

namespace kiln::mq {

// An entry is ready when it has no reservation and visible_at is 0; timed
// entries carry the time they become visible.

void Queue::Add(const store::MessageState& s, TimeMs now) {
  bool ready = s.reservation == 0 && s.visible_at <= now;
  entries_[s.id] =
      Entry{ready ? 0 : s.visible_at, s.expires_at, ready ? 0 : s.reservation, s.reserved_count};
  if (ready) {
    MakeReady(s.id);
  } else {
    PushTimed(s.visible_at, s.id);
  }
}

void Queue::PushTimed(TimeMs at, uint64_t id) {
  timed_.push({at, id});
  // A touch, a release or a delete leaves the entry it replaces in the heap
  // until its time comes (a day, for a reservation of 86400 s): once stale
  // ones outnumber the messages, the heap is made anew from the entries
  // (amortized: at least as many pushes as entries looked at).
  if (timed_.size() <= 2 * entries_.size() + 1024) return;
  std::vector<Timed> live;
  for (const auto& [mid, e] : entries_)
    if (e.visible_at > 0) live.emplace_back(e.visible_at, mid);
  timed_ = decltype(timed_)(std::greater<Timed>(), std::move(live));
}

void Queue::MakeReady(uint64_t id) {
  if (ready_tail_.empty() || id > ready_tail_.back()) {
    ready_tail_.push_back(id);
  } else {
    ready_front_.insert(id);
  }
}

store::MessageState Queue::StateOf(uint64_t id, const Entry& e) const {
  return store::MessageState{id, e.visible_at, e.expires_at, e.reserved_count, e.reservation};
}

std::optional<store::MessageState> Queue::Find(uint64_t id) const {
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  return StateOf(id, it->second);
}

size_t Queue::Tick(TimeMs now) {
  size_t made_ready = 0;
  while (!timed_.empty() && timed_.top().first <= now) {
    auto [at, id] = timed_.top();
    timed_.pop();
    auto it = entries_.find(id);
    // Stale heap entries: removed, or rescheduled (touch, release) since.
    if (it == entries_.end() || it->second.visible_at != at) continue;
    it->second.visible_at = 0;
    it->second.reservation = 0;
    MakeReady(id);
    ++made_ready;
  }
  return made_ready;
}

std::optional<store::MessageState> Queue::PopReady() {
  for (;;) {
    uint64_t id;
    bool front = !ready_front_.empty() &&
                 (ready_tail_.empty() || *ready_front_.begin() < ready_tail_.front());
    if (front) {
      id = *ready_front_.begin();
      ready_front_.erase(ready_front_.begin());
    } else if (!ready_tail_.empty()) {
      id = ready_tail_.front();
      ready_tail_.pop_front();
    } else {
      return std::nullopt;
    }
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.visible_at != 0) continue;  // stale
    // Mark it taken so that a duplicate ready entry cannot hand it out twice.
    it->second.visible_at = -1;
    return StateOf(id, it->second);
  }
}

std::vector<store::MessageState> Queue::PeekReady(size_t n) const {
  std::vector<store::MessageState> out;
  auto f = ready_front_.begin();
  auto t = ready_tail_.begin();
  uint64_t last = 0;
  while (out.size() < n && (f != ready_front_.end() || t != ready_tail_.end())) {
    uint64_t id;
    if (f != ready_front_.end() && (t == ready_tail_.end() || *f < *t)) {
      id = *f++;
    } else {
      id = *t++;
    }
    if (id == last) continue;
    last = id;
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.visible_at != 0) continue;
    out.push_back(StateOf(id, it->second));
  }
  return out;
}

store::MessageState Queue::Reserve(uint64_t id, uint64_t reservation, TimeMs until, bool count) {
  auto& e = entries_.at(id);
  e.visible_at = until;
  e.reservation = reservation;
  if (count) ++e.reserved_count;
  PushTimed(until, id);
  return StateOf(id, e);
}

store::MessageState Queue::Release(uint64_t id, TimeMs at, TimeMs now) {
  auto& e = entries_.at(id);
  e.reservation = 0;
  if (at <= now) {
    e.visible_at = 0;
    MakeReady(id);
  } else {
    e.visible_at = at;
    PushTimed(at, id);
  }
  return StateOf(id, e);
}

bool Queue::Stale(uint64_t id) const {
  auto it = entries_.find(id);
  return it == entries_.end() || it->second.visible_at != 0;
}

void Queue::TrimReady() {
  while (!ready_tail_.empty() && Stale(ready_tail_.front())) ready_tail_.pop_front();
  // Removed out of order: once stale ids outnumber the messages, drop them
  // all (amortized: at least as many removes as ids dropped).
  if (ready_tail_.size() > 2 * entries_.size() + 1024) {
    std::erase_if(ready_tail_, [&](uint64_t id) { return Stale(id); });
  }
}

void Queue::Remove(uint64_t id) {
  entries_.erase(id);
  ready_front_.erase(id);
  TrimReady();
}

std::vector<uint64_t> Queue::SweepExpired(TimeMs now) {
  std::vector<uint64_t> expired;
  if (now < next_sweep_ || entries_.empty()) return expired;
  next_sweep_ = now + kSweepEvery;
  // By bucket, so that a look goes on where the last one stopped; a rehash
  // in between moves entries, which the next round through finds.
  // Buckets are counted too: the map does not shrink, and one that once
  // held millions of messages and now a few is mostly empty buckets.
  size_t buckets = entries_.bucket_count(), seen = 0;
  for (size_t n = 0; n < buckets && seen < kSweepBudget && n < 4 * kSweepBudget; ++n) {
    size_t b = sweep_bucket_++ % buckets;
    for (auto it = entries_.begin(b); it != entries_.end(b); ++it, ++seen) {
      const Entry& e = it->second;
      bool reserved = e.reservation != 0 && e.visible_at > now;
      if (e.expires_at <= now && !reserved) expired.push_back(it->first);
    }
  }
  sweep_bucket_ %= buckets;
  for (uint64_t id : expired) Remove(id);
  return expired;
}

void Queue::Clear() {
  entries_.clear();
  ready_tail_.clear();
  ready_front_.clear();
  timed_ = {};
}

std::optional<TimeMs> Queue::NextDeadline() const {
  if (timed_.empty()) return std::nullopt;
  return timed_.top().first;
}

void Queue::AddWaiter(std::shared_ptr<Waiter> w) {
  if (w->parked) return;
  Waiter* raw = w.get();
  raw->parked = true;
  raw->woken = false;
  raw->owner = this;
  raw->at = waiters_.insert(waiters_.end(), std::move(w));
}

bool Queue::RemoveWaiter(Waiter* w) {
  if (w->owner != this) return false;  // parked on a queue since deleted
  bool woken = w->woken;
  if (w->parked) {
    w->parked = false;
    waiters_.erase(w->at);  // may destroy *w
  }
  return woken;
}

void Queue::WakeWaiters(size_t n) {
  for (; n > 0 && !waiters_.empty(); --n) {
    std::shared_ptr<Waiter> w = std::move(waiters_.front());
    waiters_.pop_front();
    w->parked = false;
    w->woken = true;
    w->wake();
  }
}

}  // namespace kiln::mq
