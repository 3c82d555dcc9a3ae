#include "store/rocks/wal_prefill.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string_view>
#include <thread>

#include "base/thread_name.h"

namespace kiln::store::rocks {
namespace {

// Zeros are written in chunks, by a filler thread, ahead of the log's end:
// it starts the next chunk when the log comes within kAhead of the filled
// end, and syncs it itself, so that no post's sync carries the chunk.
constexpr uint64_t kChunk = 1 << 20;
constexpr uint64_t kAhead = 512 << 10;
constexpr size_t kZeroBuf = 64 << 10;

bool IsWal(std::string_view fname) { return fname.ends_with(".log"); }

uint64_t ChunkEnd(uint64_t at) { return (at + kChunk - 1) / kChunk * kChunk; }

// Wraps RocksDB's own log file. RocksDB appends through its descriptor at
// its own offset, only below `filled_`; zeros go through a second
// descriptor with pwrite, only at or past `zeroed_` (>= `filled_`) and only
// under `mu_`, so data and zeros never overlap.
class PrefilledWal final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  PrefilledWal(std::unique_ptr<rocksdb::FSWritableFile> file, int fd)
      : FSWritableFileOwnerWrapper(std::move(file)), fd_(fd) {
    wanted_ = kChunk;  // the first chunk, before the first append needs it
    filler_ = std::thread([this] { FillLoop(); });
  }
  ~PrefilledWal() override {
    StopFiller();
    ::close(fd_);
  }

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                           rocksdb::IODebugContext* dbg) override {
    Prefill(data.size());
    auto s = target()->Append(data, o, dbg);
    if (s.ok()) size_ += data.size();
    return s;
  }

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    Prefill(data.size());
    auto s = target()->Append(data, o, info, dbg);
    if (s.ok()) size_ += data.size();
    return s;
  }

  // Not used by RocksDB on a live log; kept right all the same.
  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* dbg) override {
    std::lock_guard lock(mu_);
    auto s = target()->Truncate(size, o, dbg);
    if (s.ok()) {
      size_ = size;
      filled_ = size;
      zeroed_ = size;
      wanted_ = size;
    }
    return s;
  }

  // RocksDB trims its own preallocation at close; the zeros go with it,
  // and are cut here too in case it did not (or a failed fill left some
  // past `zeroed_`).
  rocksdb::IOStatus Close(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    auto s = target()->Close(o, dbg);
    StopFiller();
    if (s.ok() && ::ftruncate(fd_, static_cast<off_t>(size_)) != 0)
      s = rocksdb::IOStatus::IOError("truncating the prefilled log", strerror(errno));
    return s;
  }

 private:
  // RocksDB's writer, before appending `n` bytes: asks the filler for more
  // when the end comes near, and fills here only if the filler fell behind.
  // A failed zero write turns prefilling off: appends then grow the file.
  void Prefill(size_t n) {
    if (off_) return;
    uint64_t need = size_ + n;
    if (need + kAhead > filled_.load() && need + kAhead > wanted_.load()) {
      wanted_ = need + kAhead;
      cv_.notify_one();  // a wake-up lost to a race is repeated by the next append
    }
    if (need <= filled_.load()) return;
    std::lock_guard lock(mu_);
    if (off_ || need <= filled_) return;
    if (need <= zeroed_) return;  // the filler wrote them and is syncing them now
    uint64_t to = ChunkEnd(need);
    if (!WriteZeros(zeroed_, to)) return;
    zeroed_ = to;
    filled_ = to;
  }

  void FillLoop() {
    NameThisThread("kiln-walfill");
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || (!off_ && wanted_.load() > filled_.load()); });
      if (stopping_) return;
      uint64_t to = ChunkEnd(wanted_);
      if (to <= zeroed_) {  // the writer filled it meanwhile
        if (to > filled_) filled_ = to;
        continue;
      }
      if (!WriteZeros(zeroed_, to)) continue;
      zeroed_ = to;
      lock.unlock();
      // The new size and extents reach the journal here, not in a post's sync.
      // A failed sync is RocksDB's to see: its own sync of this file reports
      // the write-back error.
      ::fdatasync(fd_);
      lock.lock();
      // Not when a Truncate moved zeroed_ back meanwhile: those zeros are gone.
      if (to > filled_ && to <= zeroed_) filled_ = to;
    }
  }

  // Under mu_.
  bool WriteZeros(uint64_t from, uint64_t to) {
    static const char zeros[kZeroBuf] = {};
    for (uint64_t at = from; at < to;) {
      size_t len = std::min<uint64_t>(kZeroBuf, to - at);
      ssize_t w = ::pwrite(fd_, zeros, len, static_cast<off_t>(at));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        off_ = true;
        return false;
      }
      at += static_cast<uint64_t>(w);
    }
    return true;
  }

  void StopFiller() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
    if (filler_.joinable()) filler_.join();
  }

  const int fd_;
  uint64_t size_ = 0;                // bytes RocksDB appended; its writer's alone
  std::atomic<uint64_t> filled_{0};  // zeros (or data) are in the file up to here
  uint64_t zeroed_ = 0;              // zeros written up to here, maybe not synced yet; under mu_
  std::atomic<uint64_t> wanted_{0};  // the filler fills up to here
  std::atomic<bool> off_{false};     // a zero write failed
  std::mutex mu_;                    // held while zeros are written
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread filler_;
};

class WalPrefillFileSystem final : public rocksdb::FileSystemWrapper {
 public:
  using FileSystemWrapper::FileSystemWrapper;
  const char* Name() const override { return "KilnWalPrefill"; }

  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    auto s = target()->NewWritableFile(fname, o, result, dbg);
    if (!s.ok() || !IsWal(fname) || o.use_direct_writes || o.use_mmap_writes) return s;
    int fd = ::open(fname.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) *result = std::make_unique<PrefilledWal>(std::move(*result), fd);
    return s;
  }
};

}  // namespace

std::shared_ptr<rocksdb::FileSystem> NewWalPrefillFileSystem(
    std::shared_ptr<rocksdb::FileSystem> base) {
  return std::make_shared<WalPrefillFileSystem>(std::move(base));
}

}  // namespace kiln::store::rocks
