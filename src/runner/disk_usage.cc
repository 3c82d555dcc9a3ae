#include "runner/disk_usage.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>
#include <vector>

namespace kiln::runner {
namespace {

constexpr int64_t kMinEntryBytes = 4096;

int64_t Occupied(const struct stat& st) {
  return std::max<int64_t>(static_cast<int64_t>(st.st_blocks) * 512, kMinEntryBytes);
}

}  // namespace

DiskUsage MeasureDiskUsage(const std::string& dir) {
  DiskUsage usage;
  int root_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (root_fd < 0) return usage;
  struct stat root;
  DIR* top = fstat(root_fd, &root) == 0 ? fdopendir(root_fd) : nullptr;
  if (top == nullptr) {
    close(root_fd);
    return usage;
  }
  usage.bytes = Occupied(root);
  usage.entries = 1;
  std::unordered_set<ino_t> linked;  // inodes with more than one name, counted once
  std::vector<DIR*> stack{top};      // the directories being read, outermost first
  while (!stack.empty()) {
    DIR* d = stack.back();
    dirent* e = readdir(d);
    if (e == nullptr) {
      closedir(d);
      stack.pop_back();
      continue;
    }
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !linked.insert(st.st_ino).second) continue;
    usage.bytes += Occupied(st);
    ++usage.entries;
    if (!S_ISDIR(st.st_mode) || st.st_dev != root.st_dev) continue;
    if (stack.size() >= static_cast<size_t>(kMaxMeasuredDepth)) {
      usage.too_deep = true;
      continue;
    }
    int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;  // gone, or replaced by a link
    DIR* sub = fdopendir(fd);
    if (sub == nullptr) {
      close(fd);
      continue;
    }
    stack.push_back(sub);
  }
  return usage;
}

}  // namespace kiln::runner
