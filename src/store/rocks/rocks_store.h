// The embedded store: RocksDB in a data directory, one column family per
// record kind (docs/storage-format.md). One thread writes at a time, in
// arrival order. Commits queue, and a committer thread writes everything
// that queued during the previous write as one RocksDB write, synced when a
// Commit is in it (group commit); with fsync on an interval, a Commit that
// finds nobody writing writes on its own thread instead. Appends only
// queue: the next Commit carries them, or the committer writes them within
// 2 ms. Write-ahead logs are prefilled with zeros so
// a sync flushes only data (wal_prefill.h). Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/error.h"
#include "store/store.h"

namespace kiln::store::rocks {

struct Options {
  std::string dir;
  // 0: every Commit is fsync'd before `done`. >0: Commit returns after the
  // write reaches the OS, and the log is fsync'd every `sync_interval_ms`.
  int sync_interval_ms = 0;
  // Commits are refused (Unavailable) while the directory's filesystem has
  // less than this available, before RocksDB meets a full disk: a write that
  // fails there leaves the store refusing writes until a restart.
  int64_t min_free_bytes = 64 << 20;
};

// Opens (creating when missing) the store in `options.dir`. Fails with
// Unavailable when another process holds the directory and Internal when the
// data is of an unknown format version.
Result<std::unique_ptr<Store>> Open(const Options& options);

}  // namespace kiln::store::rocks
