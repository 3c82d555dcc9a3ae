// A RocksDB file system that writes zeros ahead of every write-ahead log
// file, so that appending a record overwrites blocks the file already has.
// An fdatasync after an append that grows a file must also commit the
// file's new size and extents to the file system's journal, a second device
// flush; after an overwrite it flushes only the data. On this project's
// machines that is the difference between ~190 and ~130 µs per synced post
// (docs/storage-format.md, "Write-ahead log").
//
// A filler thread writes and syncs the zeros a chunk (1 MiB) at a time,
// ahead of the log's end, so that a post's sync does not carry them.
// The zeros are what RocksDB's log reader already skips as the
// preallocated tail of a log (record type 0, length 0), so a log that was
// not closed cleanly replays as before; a clean close truncates them.
// Used by rocks::Open only.
#pragma once

#include <rocksdb/file_system.h>

#include <memory>

namespace kiln::store::rocks {

std::shared_ptr<rocksdb::FileSystem> NewWalPrefillFileSystem(
    std::shared_ptr<rocksdb::FileSystem> base);

}  // namespace kiln::store::rocks
