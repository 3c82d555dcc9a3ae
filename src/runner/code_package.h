// Zip code packages (iron-api.md §3.2): checked when uploaded, unpacked into
// a task's directory before each run. Unpacking refuses absolute paths,
// `..` and writing through symlinks, so a package cannot reach outside the
// task directory; owners are not restored (files belong to the runner).
// Stateless; any thread.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include "base/error.h"

namespace kiln::runner {

struct ZipInfo {
  int64_t files = 0;
  int64_t unpacked_bytes = 0;
  std::set<std::string> members;  // the names of its files and links (not directories)
};

// InvalidArgument when `bytes` is not a readable zip archive, does not end
// with its central directory (cut short) or has an unsafe member (absolute, with "..", a name over
// 1024 bytes or 64 levels); TooLarge when it unpacks to more than `max_unpacked` bytes or has more
// than `max_entries` entries, the directories its names imply counted
// (inodes on every run). ExtractZip refuses a member that holds more than
// its header says.
inline constexpr int64_t kMaxZipEntries = 100'000;
Result<ZipInfo> CheckZip(const std::string& bytes, int64_t max_unpacked,
                         int64_t max_entries = kMaxZipEntries);

// A zip archive of the files under `dir` (paths relative to it, modes kept),
// for `kiln worker upload`. Symlinks are stored as links.
Result<std::string> ZipDirectory(const std::string& dir);

// Unpacks the zip archive at `zip_path` into the existing directory `dir`,
// writing at most `max_bytes` of file data.
Result<void> ExtractZip(const std::string& zip_path, const std::string& dir, int64_t max_bytes);

}  // namespace kiln::runner
