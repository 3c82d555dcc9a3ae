// How much of its filesystem a directory tree occupies: the measure that
// Runc::Run holds a task dir to (a code's `disk` limit), since the task dir
// lives on the data dir's disk, beside Kiln's store, with no quota of its
// own. Pure function of the tree as it is during the walk; thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace kiln::runner {

// Deeper directories are not entered: the walk holds one descriptor per
// level (no path is ever built, so no depth is too long to name).
inline constexpr int kMaxMeasuredDepth = 256;

struct DiskUsage {
  int64_t bytes = 0;      // what the tree's entries occupy (st_blocks), each at least 4 KiB
  int64_t entries = 0;    // files, directories and links, the root included
  bool too_deep = false;  // some directory lies deeper than kMaxMeasuredDepth: not counted
};

// Walks `dir` without following symbolic links or entering other mounts.
// Each file, directory or link counts the blocks it occupies, at least
// 4 KiB (so that a million empty files are not free); a file with several
// hard links counts once. Entries that vanish during the walk are skipped;
// a `dir` that cannot be opened measures zero.
DiskUsage MeasureDiskUsage(const std::string& dir);

}  // namespace kiln::runner
