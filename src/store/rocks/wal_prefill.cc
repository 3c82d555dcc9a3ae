#include "store/rocks/wal_prefill.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

namespace kiln::store::rocks {
namespace {

// Zeros are written this far ahead, a chunk at a time: the first sync after
// a chunk flushes it (a few ms once per chunk), every other sync is cheap.
constexpr uint64_t kChunk = 4 << 20;
constexpr size_t kZeroBuf = 64 << 10;

bool IsWal(std::string_view fname) { return fname.ends_with(".log"); }

// Wraps RocksDB's own log file. RocksDB appends through its descriptor at
// its own offset; the zeros go through a second descriptor with pwrite,
// always past everything appended, so the two never overlap.
class PrefilledWal final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  PrefilledWal(std::unique_ptr<rocksdb::FSWritableFile> file, int fd)
      : FSWritableFileOwnerWrapper(std::move(file)), fd_(fd) {}
  ~PrefilledWal() override { CloseFd(); }

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

  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* dbg) override {
    auto s = target()->Truncate(size, o, dbg);
    if (s.ok()) size_ = filled_ = size;
    return s;
  }

  // RocksDB trims its own preallocation at close; the zeros go with it,
  // and are cut here too in case it did not.
  rocksdb::IOStatus Close(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    auto s = target()->Close(o, dbg);
    if (s.ok() && fd_ >= 0 && filled_ > size_ && ::ftruncate(fd_, static_cast<off_t>(size_)) != 0)
      s = rocksdb::IOStatus::IOError("truncating the prefilled log", strerror(errno));
    CloseFd();
    return s;
  }

 private:
  // Makes sure the next `n` bytes land on zeros already in the file. A
  // failure only turns prefilling off: appends then grow the file as usual.
  void Prefill(size_t n) {
    if (fd_ < 0 || size_ + n <= filled_) return;
    static const char zeros[kZeroBuf] = {};
    uint64_t to = (size_ + n + kChunk) / kChunk * kChunk;
    for (uint64_t at = std::max(filled_, size_); at < to;) {
      size_t len = std::min<uint64_t>(kZeroBuf, to - at);
      ssize_t w = ::pwrite(fd_, zeros, len, static_cast<off_t>(at));
      if (w <= 0) {
        if (w < 0 && errno == EINTR) continue;
        CloseFd();
        return;
      }
      at += static_cast<uint64_t>(w);
      filled_ = at;
    }
  }

  void CloseFd() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  int fd_;
  uint64_t size_ = 0;    // bytes RocksDB appended
  uint64_t filled_ = 0;  // the file holds zeros (or data) up to here
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
