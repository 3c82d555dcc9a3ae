// The persistence interface of the queue service and of projects and tokens.
// mq::Engine keeps the live index in memory and uses a Store as the durable
// record: it writes every change here and reads everything back on start.
// Implementations are thread-safe: any thread may call any method.
#pragma once

#include <algorithm>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/error.h"
#include "store/records.h"

namespace kiln::store {

// An ordered set of message mutations applied atomically.
class MessageBatch {
 public:
  enum class Kind { kPut, kPutState, kDelete, kSetTotal, kClear, kDropQueue, kPutPlan };
  struct Op {
    Kind kind;
    uint64_t qid;
    MessageState state;  // kPut, kPutState; state.id for kDelete
    std::string body;    // kPut
    uint64_t total = 0;  // kSetTotal
    bool plan = false;   // kDelete: the message may have a push plan too
  };

  void Put(uint64_t qid, const MessageState& s, std::string body) {
    ops_.push_back({Kind::kPut, qid, s, std::move(body)});
  }
  void PutState(uint64_t qid, const MessageState& s) {
    ops_.push_back({Kind::kPutState, qid, s, {}});
  }
  // `push`: the message belongs to a push queue and may have a delivery
  // plan, which goes with it (a queue's type never changes).
  void Delete(uint64_t qid, uint64_t id, bool push) {
    ops_.push_back({Kind::kDelete, qid, MessageState{.id = id}, {}, 0, push});
  }
  void SetTotal(uint64_t qid, uint64_t total) {
    ops_.push_back({Kind::kSetTotal, qid, {}, {}, total});
  }
  // The push delivery plan of message `id` (opaque bytes, mq/push.h).
  void PutPlan(uint64_t qid, uint64_t id, std::string plan) {
    ops_.push_back({Kind::kPutPlan, qid, MessageState{.id = id}, std::move(plan)});
  }
  // Removes every message of the queue.
  void Clear(uint64_t qid) { ops_.push_back({Kind::kClear, qid, {}, {}}); }
  // Removes the queue's record, its messages and its counters.
  void DropQueue(uint64_t qid) { ops_.push_back({Kind::kDropQueue, qid, {}, {}}); }
  bool empty() const { return ops_.empty(); }
  const std::vector<Op>& ops() const { return ops_; }
  // Only removes (deletes, clears, drops) and queue totals (a few bytes,
  // written with them and at a clean stop, where refusing them would bring
  // total_messages back short after a restart): taken even when the disk
  // is nearly full.
  bool only_removes() const {
    return std::all_of(ops_.begin(), ops_.end(), [](const Op& op) {
      return op.kind == Kind::kDelete || op.kind == Kind::kClear || op.kind == Kind::kDropQueue ||
             op.kind == Kind::kSetTotal;
    });
  }

 private:
  std::vector<Op> ops_;
};

class Store {
 public:
  virtual ~Store() = default;

  // Message writes go to one log in the order they are made. Commit makes
  // `batch` durable (fsync'd, group-committed with everything else waiting)
  // and then calls `done`: on the calling thread before Commit returns, or
  // later on another thread, so the caller must not hold a lock that `done`
  // takes. Append returns at once, never writing on the caller's thread (so
  // it may be called under the caller's locks): the batch rides the next
  // group commit, or is written unsynced within a few milliseconds, so a
  // crash may lose it. A failed write puts the store in a failed state that
  // every later Commit reports.
  //
  // `writer` says who writes a Commit that finds no write under way:
  // kCommitter, the store's own thread (Commit returns at once, `done`
  // comes on that thread); kCaller, the calling thread, which then blocks
  // in the write and its fdatasync and gets `done` before Commit returns:
  // two thread hand-offs fewer, for a caller with nothing else to do
  // meanwhile. A Commit that finds a write under way joins the next group
  // either way.
  using Done = std::function<void(Result<void>)>;
  enum class Writer { kCommitter, kCaller };
  virtual void Commit(MessageBatch batch, Done done, Writer writer) = 0;
  virtual void Append(MessageBatch batch) = 0;
  virtual Result<std::string> GetBody(uint64_t qid, uint64_t id) = 0;

  // Queue records. PutQueue is durable on return.
  virtual Result<void> PutQueue(const QueueRecord& q) = 0;
  // A queue id never handed out before, durable on return (a failed write
  // is an error: after a restart the id could be handed out again).
  virtual Result<uint64_t> NextQueueId() = 0;
  // A lower bound for message ids handed out after a restart (0 when never
  // set), kept ahead of every id handed out so that none repeats, whatever
  // the clock says. SetMessageIdFloor is durable on return.
  virtual Result<uint64_t> MessageIdFloor() = 0;
  virtual Result<void> SetMessageIdFloor(uint64_t floor) = 0;

  // Recovery, called once before serving.
  virtual Result<void> ForEachQueue(
      const std::function<void(const QueueRecord&, uint64_t total)>& fn) = 0;
  virtual Result<void> ForEachMessage(
      const std::function<void(uint64_t qid, const MessageState&)>& fn) = 0;
  virtual Result<void> ForEachPlan(
      const std::function<void(uint64_t qid, uint64_t id, std::string_view plan)>& fn) = 0;

  // Records of the task service (codes, tasks), as opaque bytes under a key
  // such as "task/<id>". PutWorkerRecords writes them all in one write (one
  // fdatasync, all or none). Durable on return.
  using WorkerRecords = std::vector<std::pair<std::string, std::string>>;  // key, value
  virtual Result<void> PutWorkerRecords(const WorkerRecords& records) = 0;
  Result<void> PutWorkerRecord(std::string key, std::string value) {
    return PutWorkerRecords({{std::move(key), std::move(value)}});
  }
  // Removes the records in one write. Durable on return.
  virtual Result<void> DeleteWorkerRecords(const std::vector<std::string>& keys) = 0;
  // The record under `key`. Errors: NotFound.
  virtual Result<std::string> GetWorkerRecord(const std::string& key) = 0;
  virtual Result<void> ForEachWorkerRecord(
      const std::string& prefix,
      const std::function<void(std::string_view key, std::string_view value)>& fn) = 0;

  // Projects and tokens. Durable on return.
  virtual Result<void> PutProject(const ProjectRecord& p) = 0;
  virtual Result<std::vector<ProjectRecord>> ListProjects() = 0;
  virtual Result<void> PutToken(const TokenRecord& t) = 0;
  virtual Result<TokenRecord> GetTokenByHash(const std::string& hash) = 0;  // NotFound
  virtual Result<std::vector<TokenRecord>> ListTokens() = 0;
  virtual Result<void> DeleteToken(const std::string& id) = 0;  // NotFound
};

}  // namespace kiln::store
