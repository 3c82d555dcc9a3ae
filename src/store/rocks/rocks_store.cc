#include "store/rocks/rocks_store.h"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <sys/statvfs.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "base/thread_name.h"
#include "store/rocks/codec.h"
#include "store/rocks/wal_prefill.h"

namespace kiln::store::rocks {
namespace {

constexpr const char* kFormatKey = "format_version";
constexpr const char* kNextQidKey = "next_qid";
constexpr const char* kMessageIdFloorKey = "message_id_floor";

// How long an Append may wait for a Commit to carry it to the log before
// the committer writes it on its own: the most a kill -9 can lose of
// reserves, deletes and delivery results (docs/storage-format.md).
constexpr auto kAppendDelay = std::chrono::milliseconds(2);
// For this long after Appends last came, the committer waits on a timer
// (every kAppendDelay) even with nothing pending, so that the next Append
// needs no wake-up: a busy store costs the committer one timed wake per
// kAppendDelay instead of a futex wake per reserve; an idle one, none.
constexpr auto kAppendLinger = std::chrono::milliseconds(100);

enum Cf {
  kDefault,
  kQueues,
  kStates,
  kBodies,
  kCounters,
  kProjects,
  kTokens,
  kPlans,
  kWorker,
  kNumCf
};
const char* const kCfNames[kNumCf] = {"default",  "queues", "msg_state", "msg_body", "counters",
                                      "projects", "tokens", "push_plan", "worker"};

Error FromStatus(const rocksdb::Status& s) {
  if (s.IsNotFound()) return Error::NotFound(s.ToString());
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos)
    return Error::Unavailable("data directory is in use by another process: " + s.ToString());
  return Error::Internal("store: " + s.ToString());
}

// Message keys are 8 bytes of queue id and 8 of message id (codec.h). A
// queue's writes land near its previous ones: a post after the newest
// message, a reserve or delete just before the record it replaces. RocksDB
// keeps one insert position ("splice") per prefix given by this transform
// and starts each memtable insert from there, where its default, which
// starts over whenever a key is not after the last one, searches the whole
// skip list for each of those writes. Range deletions (Clear, DropQueue)
// begin at message id 0 and are kept out of its domain: RocksDB shares the
// hints between its point and range-deletion tables, and a splice of one
// must never be used in the other.
class QueuePrefix final : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "kiln.QueuePrefix"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override { return {key.data(), 8}; }
  bool InDomain(const rocksdb::Slice& key) const override {
    if (key.size() != 16) return false;
    for (size_t i = 8; i < 16; ++i)
      if (key[i] != 0) return true;
    return false;
  }
};

class RocksStore final : public Store {
 public:
  RocksStore(std::unique_ptr<rocksdb::Env> env, rocksdb::DB* db,
             std::vector<rocksdb::ColumnFamilyHandle*> cfs, Options options)
      : env_(std::move(env)), db_(db), cf_(std::move(cfs)), options_(std::move(options)) {
    sync_.sync = true;
    committer_ = std::thread([this] { CommitLoop(); });
    if (options_.sync_interval_ms > 0) syncer_ = std::thread([this] { SyncLoop(); });
  }

  ~RocksStore() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    cv_sync_.notify_all();
    committer_.join();
    if (syncer_.joinable()) syncer_.join();
    db_->FlushWAL(true);
    // Persist the memtables on a clean stop so the next start need not
    // replay the log (after a crash, it does).
    rocksdb::FlushOptions fo;
    db_->Flush(fo, cf_);
    for (auto* h : cf_) db_->DestroyColumnFamilyHandle(h);
    delete db_;
  }

  Result<void> Init() {
    std::string v;
    auto s = db_->Get({}, cf_[kDefault], kFormatKey, &v);
    if (!s.ok() && !s.IsNotFound()) return Fail(FromStatus(s));
    if (s.IsNotFound() || v == "1") {  // new, or of a Kiln whose tasks held their payloads
      auto w = db_->Put(sync_, cf_[kDefault], kFormatKey, std::to_string(kStoreVersion));
      if (!w.ok()) return Fail(FromStatus(w));
    } else if (v != std::to_string(kStoreVersion)) {
      return Fail(Error::Internal("data directory has format version " + v + ", this Kiln reads " +
                                  std::to_string(kStoreVersion) + " (and 1)"));
    }
    s = db_->Get({}, cf_[kDefault], kNextQidKey, &v);
    if (!s.ok() && !s.IsNotFound()) return Fail(FromStatus(s));
    // Starting again at 1 would give a new queue the id, and the messages,
    // of an old one.
    if (s.ok() && v.size() != 8)
      return Fail(Error::Internal("the store's next queue id is " + std::to_string(v.size()) +
                                  " bytes, not 8: the data directory is damaged"));
    next_qid_ = s.ok() ? DecodeU64(v) : 1;
    return Ok();
  }

  void Commit(MessageBatch batch, Done done, Writer writer) override {
    std::vector<Pending> group;
    std::string why = batch.only_removes() ? std::string() : DiskTooFull();
    if (!why.empty()) return done(Fail(Error::Unavailable(why)));
    {
      std::lock_guard lock(mu_);
      if (!stopping_ && failed_.empty()) {
        // A synced write goes to the committer unless the caller asked to
        // write it: an io thread blocked in fdatasync would stall its other
        // connections. With fsync on an interval the write is unsynced and
        // any caller takes it.
        if (writing_ || (writer == Writer::kCommitter && options_.sync_interval_ms == 0)) {
          pending_.push_back({std::move(batch), std::move(done)});
          ++commits_pending_;
          if (!writing_ && committer_idle_) cv_.notify_one();
          return;  // else the writer wakes the committer when it is done
        }
        // Nobody writes: this thread takes the writer's turn and writes what
        // waits (deferred Appends and Commits, in order) with its batch.
        writing_ = true;
        TakePending(&group);
      } else {
        why = failed_.empty() ? "store is closing" : failed_;
      }
    }
    if (!why.empty()) return done(Fail(Error::Unavailable(why)));
    group.push_back({std::move(batch), std::move(done)});
    WriteGroup(group, /*sync=*/true);
  }

  void Append(MessageBatch batch) override {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    if (pending_.empty()) oldest_append_ = std::chrono::steady_clock::now();
    pending_.push_back({std::move(batch), nullptr});
    // The committer writes it within kAppendDelay unless a Commit takes it
    // first; a committer already waiting for a deadline needs no wake-up.
    if (committer_idle_ && !committer_timed_ && !writing_) cv_.notify_one();
  }

  Result<std::string> GetBody(uint64_t qid, uint64_t id) override {
    std::string v;
    auto key = MessageKeyBytes(qid, id);
    auto s = db_->Get({}, cf_[kBodies], rocksdb::Slice(key.data(), key.size()), &v);
    if (!s.ok()) return Fail(FromStatus(s));
    return v;
  }

  Result<void> PutQueue(const QueueRecord& q) override {
    return Check(db_->Put(sync_, cf_[kQueues], EncodeU64(q.qid), EncodeQueue(q)));
  }

  Result<uint64_t> NextQueueId() override {
    std::lock_guard lock(qid_mu_);
    if (auto r = Check(db_->Put(sync_, cf_[kDefault], kNextQidKey, EncodeU64(next_qid_ + 1))); !r)
      return Fail(r.error());
    return next_qid_++;
  }

  Result<uint64_t> MessageIdFloor() override {
    std::string v;
    auto s = db_->Get({}, cf_[kDefault], kMessageIdFloorKey, &v);
    if (s.IsNotFound()) return 0;
    if (!s.ok()) return Fail(FromStatus(s));
    return DecodeU64(v);
  }

  Result<void> SetMessageIdFloor(uint64_t floor) override {
    return Check(db_->Put(sync_, cf_[kDefault], kMessageIdFloorKey, EncodeU64(floor)));
  }

  Result<void> ForEachQueue(const std::function<void(const QueueRecord&, uint64_t)>& fn) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, cf_[kQueues]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto q = DecodeQueue(Sv(it->value()));
      if (!q)
        return Fail(Error::Internal("queue record " + ToHex(Sv(it->key())) +
                                    " does not decode: " + q.error().message()));
      std::string total;
      auto s = db_->Get({}, cf_[kCounters], EncodeU64(q->qid), &total);
      fn(*q, s.ok() ? DecodeU64(total) : 0);
    }
    return Check(it->status());
  }

  Result<void> ForEachMessage(
      const std::function<void(uint64_t, const MessageState&)>& fn) override {
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;
    ro.readahead_size = 4 << 20;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf_[kStates]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto k = Sv(it->key());
      if (k.size() != 16) return Fail(Error::Internal("corrupt message key " + ToHex(k)));
      auto st = DecodeState(DecodeU64(k.substr(8)), Sv(it->value()));
      if (!st)
        return Fail(Error::Internal("message state of queue " + std::to_string(DecodeU64(k)) +
                                    ", message " + std::to_string(DecodeU64(k.substr(8))) +
                                    " does not decode: " + st.error().message()));
      fn(DecodeU64(k), *st);
    }
    return Check(it->status());
  }

  Result<void> ForEachPlan(
      const std::function<void(uint64_t, uint64_t, std::string_view)>& fn) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, cf_[kPlans]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto k = Sv(it->key());
      if (k.size() != 16) return Fail(Error::Internal("corrupt push plan key " + ToHex(k)));
      fn(DecodeU64(k), DecodeU64(k.substr(8)), Sv(it->value()));
    }
    return Check(it->status());
  }

  Result<void> PutWorkerRecords(const WorkerRecords& records) override {
    if (records.empty()) return Ok();
    rocksdb::WriteBatch wb;
    for (const auto& [key, value] : records) wb.Put(cf_[kWorker], key, value);
    return Check(db_->Write(sync_, &wb));
  }

  Result<void> DeleteWorkerRecords(const std::vector<std::string>& keys) override {
    if (keys.empty()) return Ok();
    rocksdb::WriteBatch wb;
    for (const auto& k : keys) wb.Delete(cf_[kWorker], k);
    return Check(db_->Write(sync_, &wb));
  }

  Result<std::string> GetWorkerRecord(const std::string& key) override {
    std::string v;
    auto s = db_->Get({}, cf_[kWorker], key, &v);
    if (!s.ok()) return Fail(FromStatus(s));
    return v;
  }

  Result<void> ForEachWorkerRecord(
      const std::string& prefix,
      const std::function<void(std::string_view, std::string_view)>& fn) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, cf_[kWorker]));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
      fn(Sv(it->key()), Sv(it->value()));
    return Check(it->status());
  }

  Result<void> PutProject(const ProjectRecord& p) override {
    return Check(db_->Put(sync_, cf_[kProjects], p.id, EncodeProject(p)));
  }

  Result<std::vector<ProjectRecord>> ListProjects() override {
    std::vector<ProjectRecord> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, cf_[kProjects]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto p = DecodeProject(Sv(it->value()));
      if (!p) return Fail(p.error());
      out.push_back(std::move(*p));
    }
    if (auto r = Check(it->status()); !r) return Fail(r.error());
    return out;
  }

  Result<void> PutToken(const TokenRecord& t) override {
    return Check(db_->Put(sync_, cf_[kTokens], t.hash, EncodeToken(t)));
  }

  Result<TokenRecord> GetTokenByHash(const std::string& hash) override {
    std::string v;
    auto s = db_->Get({}, cf_[kTokens], hash, &v);
    if (s.IsNotFound()) return Fail(Error::NotFound("token not found"));
    if (!s.ok()) return Fail(FromStatus(s));
    return DecodeToken(v);
  }

  Result<std::vector<TokenRecord>> ListTokens() override {
    std::vector<TokenRecord> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, cf_[kTokens]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto t = DecodeToken(Sv(it->value()));
      if (!t) return Fail(t.error());
      out.push_back(std::move(*t));
    }
    if (auto r = Check(it->status()); !r) return Fail(r.error());
    return out;
  }

  Result<void> DeleteToken(const std::string& id) override {
    auto all = ListTokens();
    if (!all) return Fail(all.error());
    for (auto& t : *all)
      if (t.id == id) return Check(db_->Delete(sync_, cf_[kTokens], t.hash));
    return Fail(Error::NotFound("Token not found"));
  }

 private:
  struct Pending {
    MessageBatch batch;
    Done done;  // null for Append
  };

  // Why a Commit is refused for lack of disk space ("" when it is not):
  // Options::min_free_bytes, looked at every 100 ms at most.
  std::string DiskTooFull() {
    if (options_.min_free_bytes <= 0) return {};
    std::lock_guard lock(space_mu_);
    auto now = std::chrono::steady_clock::now();
    if (now - space_looked_ >= std::chrono::milliseconds(100)) {
      space_looked_ = now;
      struct statvfs fs;
      space_low_ = statvfs(options_.dir.c_str(), &fs) == 0 &&
                   static_cast<int64_t>(fs.f_bavail) * static_cast<int64_t>(fs.f_frsize) <
                       options_.min_free_bytes;
    }
    if (!space_low_) return {};
    return "store: the data dir's disk has less than " +
           std::to_string(options_.min_free_bytes >> 20) + " MB free";
  }

  // Under mu_. Moves every queued batch into `group`.
  void TakePending(std::vector<Pending>* group) {
    group->swap(pending_);
    commits_pending_ = 0;
  }

  // Writes `group` as one RocksDB write on the calling thread, which holds
  // the writer's turn, releases the turn, then reports to the Commits in it.
  void WriteGroup(std::vector<Pending>& group, bool sync) {
    rocksdb::WriteBatch wb;
    for (auto& p : group) AppendTo(p.batch, &wb);
    auto s = Write(&wb, sync);
    {
      std::lock_guard lock(mu_);
      if (!s.ok()) failed_ = "store write failed: " + s.ToString();
      writing_ = false;
      if (committer_idle_ && (!pending_.empty() || stopping_)) cv_.notify_one();
    }
    for (auto& p : group)
      if (p.done) p.done(Check(s));
  }

  static std::string_view Sv(const rocksdb::Slice& s) { return {s.data(), s.size()}; }
  static std::string ToHex(std::string_view b) {  // a key, for an error message
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : b.substr(0, 64)) {
      out += kDigits[c >> 4];
      out += kDigits[c & 15];
    }
    return out;
  }
  static Result<void> Check(const rocksdb::Status& s) {
    if (!s.ok()) return Fail(FromStatus(s));
    return Ok();
  }

  void AppendTo(const MessageBatch& batch, rocksdb::WriteBatch* wb) {
    for (const auto& op : batch.ops()) {
      auto key_bytes = MessageKeyBytes(op.qid, op.state.id);
      rocksdb::Slice key(key_bytes.data(), key_bytes.size());
      switch (op.kind) {
        case MessageBatch::Kind::kPut:
          wb->Put(cf_[kBodies], key, op.body);
          [[fallthrough]];
        case MessageBatch::Kind::kPutState: {
          auto state = EncodeStateBytes(op.state);
          wb->Put(cf_[kStates], key, rocksdb::Slice(state.data(), state.size()));
          break;
        }
        case MessageBatch::Kind::kDelete:
          wb->Delete(cf_[kStates], key);
          wb->Delete(cf_[kBodies], key);
          if (op.plan) wb->Delete(cf_[kPlans], key);
          break;
        case MessageBatch::Kind::kPutPlan:
          wb->Put(cf_[kPlans], key, op.body);
          break;
        case MessageBatch::Kind::kSetTotal:
          wb->Put(cf_[kCounters], EncodeU64(op.qid), EncodeU64(op.total));
          break;
        case MessageBatch::Kind::kDropQueue:
          wb->Delete(cf_[kQueues], EncodeU64(op.qid));
          wb->Delete(cf_[kCounters], EncodeU64(op.qid));
          [[fallthrough]];
        case MessageBatch::Kind::kClear: {
          std::string from = MessageKey(op.qid, 0), to = MessageKey(op.qid + 1, 0);
          wb->DeleteRange(cf_[kStates], from, to);
          wb->DeleteRange(cf_[kBodies], from, to);
          wb->DeleteRange(cf_[kPlans], from, to);
          break;
        }
      }
    }
  }

  // Group commit: everything that queued up during one write goes into the
  // next one, in order, as one RocksDB write, synced when a Commit is in it
  // (and fsync is not on an interval). Appends alone wait up to
  // kAppendDelay for a Commit to carry them, then go on their own.
  void CommitLoop() {
    NameThisThread("kiln-commit");
    std::vector<Pending> group;
    for (;;) {
      bool sync = false;
      {
        std::unique_lock lock(mu_);
        committer_idle_ = true;
        for (;;) {
          if (!writing_ && (stopping_ || commits_pending_ > 0)) break;
          if (!writing_ && !pending_.empty()) {
            auto deadline = oldest_append_ + kAppendDelay;
            if (std::chrono::steady_clock::now() >= deadline) break;
            committer_timed_ = true;
            cv_.wait_until(lock, deadline);
            committer_timed_ = false;
          } else if (auto now = std::chrono::steady_clock::now();
                     now - oldest_append_ < kAppendLinger) {
            committer_timed_ = true;
            cv_.wait_until(lock, now + kAppendDelay);
            committer_timed_ = false;
          } else {
            cv_.wait(lock);
          }
        }
        committer_idle_ = false;
        if (pending_.empty()) return;  // stopping, and everything is written
        sync = commits_pending_ > 0;
        TakePending(&group);
        writing_ = true;
      }
      WriteGroup(group, sync);
      group.clear();
    }
  }

  // `durable`: a Commit, synced before its `done` unless fsync is on an
  // interval (then, like an Append, written to the file and synced by the
  // syncer). Every write reaches the file before it returns.
  rocksdb::Status Write(rocksdb::WriteBatch* wb, bool durable) {
    return db_->Write(durable && options_.sync_interval_ms == 0 ? sync_ : nosync_, wb);
  }

  // With fsync on an interval: syncs the log every interval.
  void SyncLoop() {
    NameThisThread("kiln-sync");
    std::unique_lock lock(mu_);
    while (!stopping_) {
      cv_sync_.wait_for(lock, std::chrono::milliseconds(options_.sync_interval_ms));
      lock.unlock();
      rocksdb::Status st = db_->FlushWAL(true);
      lock.lock();
      // The posts since the last sync were acknowledged already; those
      // after this are refused until the store resumes.
      if (!st.ok() && failed_.empty()) failed_ = "store sync failed: " + st.ToString();
    }
  }

  std::unique_ptr<rocksdb::Env> env_;  // outlives db_
  rocksdb::DB* db_;
  std::vector<rocksdb::ColumnFamilyHandle*> cf_;
  Options options_;
  rocksdb::WriteOptions sync_, nosync_;

  std::mutex mu_;
  std::condition_variable cv_, cv_sync_;
  std::vector<Pending> pending_;                         // in arrival order
  size_t commits_pending_ = 0;                           // Commits in pending_
  std::chrono::steady_clock::time_point oldest_append_;  // when pending_ last became non-empty
  bool stopping_ = false;
  bool committer_idle_ = false;
  bool committer_timed_ = false;  // the committer waits on a timer: Appends need not wake it
  bool writing_ = false;          // a thread holds the writer's turn
  std::string failed_;            // set after a write failed
  std::mutex space_mu_;           // for the look at free space, at most every 100 ms
  std::chrono::steady_clock::time_point space_looked_;
  bool space_low_ = false;
  std::thread committer_, syncer_;

  std::mutex qid_mu_;
  uint64_t next_qid_ = 1;
};

}  // namespace

Result<std::unique_ptr<Store>> Open(const Options& options) {
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.IncreaseParallelism(2);
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 4;
  // Past this much live log, the column families holding the oldest log are
  // flushed: else the rarely written ones (the id floor, counters) keep every
  // log alive up to RocksDB's default (4 x 9 x 64 MiB x 2, ~4.6 GB), all of
  // it replayed after a kill -9.
  db_options.max_total_wal_size = 256 << 20;
  db_options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  // (manual_wal_flush would save a write(2) per unsynced write, but a
  // FlushWAL racing a synced write's flush of the same buffer can corrupt
  // the log, RocksDB issue 8723; we could not confirm that 7.8 has the fix.)
  auto env = rocksdb::NewCompositeEnv(NewWalPrefillFileSystem(rocksdb::FileSystem::Default()));
  db_options.env = env.get();

  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.write_buffer_size = 64 << 20;
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));

  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (int i = 0; i < kNumCf; ++i) {
    descs.emplace_back(kCfNames[i], cf_options);
    if (i == kStates || i == kBodies || i == kPlans)
      descs.back().options.memtable_insert_with_hint_prefix_extractor =
          std::make_shared<QueuePrefix>();
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  auto s = rocksdb::DB::Open(db_options, options.dir, descs, &handles, &db);
  if (!s.ok()) return Fail(FromStatus(s));
  auto store = std::make_unique<RocksStore>(std::move(env), db, std::move(handles), options);
  if (auto r = store->Init(); !r) return Fail(r.error());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace kiln::store::rocks
