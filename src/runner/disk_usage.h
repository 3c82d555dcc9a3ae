// How much of its filesystem a directory tree occupies: the measure that
// Runc::Run holds a task dir to (a code's `disk` limit), since the task dir
// lives on the data dir's disk, beside Kiln's store, with no quota of its
// own. Pure function of the tree as it is during the walk; thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::runner {

// Deeper directories are not entered: the walk holds one descriptor per
// level (no path is ever built, so no depth is too long to name).
inline constexpr int kMaxMeasuredDepth = 256;
// The walk stops past this many names: a tree that takes seconds to walk
// would space the looks out (and hold the watch) as long as it likes.
inline constexpr int64_t kMaxMeasuredEntries = 1'000'000;

struct DiskUsage {
  int64_t bytes = 0;      // what the tree's entries occupy (st_blocks), each at least 4 KiB
  int64_t entries = 0;    // names: files, directories and links, the root included
  bool too_deep = false;  // some directory lies deeper than kMaxMeasuredDepth: not counted
  bool too_many = false;  // more than kMaxMeasuredEntries names: the walk stopped there
};

// Walks `dir` without following symbolic links or entering other mounts.
// Each name counts the blocks of what it names, at least 4 KiB (so that a
// million empty files are not free); a file with several hard links counts
// its blocks once and 4 KiB for each further name. Entries that vanish
// during the walk are skipped; a `dir` that cannot be opened measures zero.
// Past `max_entries` names the walk stops (too_many).
DiskUsage MeasureDiskUsage(const std::string& dir, int64_t max_entries = kMaxMeasuredEntries);

// What the regular files that processes `pids` hold open (or mapped) but
// that have no name left occupy on device `dev`: a task can delete a file
// it goes on writing, out of the walk's sight. Each inode counts once;
// processes that are gone are skipped.
int64_t UnlinkedOpenFileBytes(const std::vector<pid_t>& pids, dev_t dev);

// The bytes an unprivileged writer may still use on the filesystem that
// holds `path` (statvfs's f_bavail), or -1 when it cannot be asked.
int64_t AvailableDiskBytes(const std::string& path);

}  // namespace kiln::runner
