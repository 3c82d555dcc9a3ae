#include "runner/disk_usage.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_set>
#include <vector>

namespace kiln::runner {
namespace {

constexpr int64_t kMinEntryBytes = 4096;

int64_t Occupied(const struct stat& st) {
  return std::max<int64_t>(static_cast<int64_t>(st.st_blocks) * 512, kMinEntryBytes);
}

}  // namespace

DiskUsage MeasureDiskUsage(const std::string& dir, int64_t max_entries) {
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
    if (++usage.entries > max_entries) {
      usage.too_many = true;
      break;
    }
    bool counted = !S_ISDIR(st.st_mode) && st.st_nlink > 1 && !linked.insert(st.st_ino).second;
    usage.bytes += counted ? kMinEntryBytes : Occupied(st);  // a further name of a counted file
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
  for (DIR* d : stack) closedir(d);  // left open by a walk that stopped
  return usage;
}

int64_t UnlinkedOpenFileBytes(const std::vector<pid_t>& pids, dev_t dev) {
  int64_t bytes = 0;
  std::unordered_set<ino_t> seen;
  for (pid_t pid : pids) {
    // fd: open files; map_files: mappings, which outlive the descriptor.
    for (const char* what : {"fd", "map_files"}) {
      std::string path = "/proc/" + std::to_string(pid) + "/" + what;
      DIR* d = opendir(path.c_str());
      if (d == nullptr) continue;  // gone
      while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        struct stat st;
        // Follows the link to the open file itself, named or not.
        if (fstatat(dirfd(d), e->d_name, &st, 0) != 0) continue;
        if (!S_ISREG(st.st_mode) || st.st_nlink != 0 || st.st_dev != dev) continue;
        if (seen.insert(st.st_ino).second) bytes += Occupied(st);
      }
      closedir(d);
    }
  }
  return bytes;
}

int64_t AvailableDiskBytes(const std::string& path) {
  struct statvfs fs;
  if (statvfs(path.c_str(), &fs) != 0) return -1;
  return static_cast<int64_t>(fs.f_bavail) * static_cast<int64_t>(fs.f_frsize);
}

}  // namespace kiln::runner
