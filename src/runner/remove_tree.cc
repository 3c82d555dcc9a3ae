#include "runner/remove_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace kiln::runner {
namespace {

constexpr int kMaxDepth = 64;  // levels held open at once

struct Remover {
  int top;                  // `path`, where deep subtrees are moved
  unsigned long moved = 0;  // names given to them there
  unsigned long done = 0;   // entries removed or moved, for telling progress
  std::string error;        // the first one

  void Note(const char* what, const std::string& name) {
    if (error.empty()) error = std::string(what) + " " + name + ": " + std::strerror(errno);
  }

  // Removes what the directory `dir` holds. Returns whether it moved a
  // subtree up to `top` (which then needs another pass).
  bool EmptyDir(int dir, int depth) {
    // Its own open, close-on-exec: a dup would share `dir`'s offset and
    // leave the descriptor to a child spawned meanwhile.
    int fd = ::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR* d = fd < 0 ? nullptr : ::fdopendir(fd);
    if (!d) {
      if (fd >= 0) ::close(fd);
      Note("cannot read", "a directory");
      return false;
    }
    bool again = false;
    std::vector<std::string> names;  // read first: removing while reading may skip entries
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      names.emplace_back(e->d_name);
      if (names.size() >= 4096) break;  // the rest on the next round
    }
    ::closedir(d);
    for (const auto& name : names) {
      struct stat st;
      if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT) Note("cannot look at", name);
        continue;
      }
      if (!S_ISDIR(st.st_mode)) {
        if (::unlinkat(dir, name.c_str(), 0) == 0)
          ++done;
        else if (errno != ENOENT)
          Note("cannot remove", name);
        continue;
      }
      if (depth >= kMaxDepth) {
        std::string up = ".kiln-rm-" + std::to_string(moved++);
        if (::renameat(dir, name.c_str(), top, up.c_str()) == 0) {
          again = true;
          ++done;
        } else {
          Note("cannot move up", name);
        }
        continue;
      }
      int sub = ::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) {
        Note("cannot open", name);
        continue;
      }
      again |= EmptyDir(sub, depth + 1);
      ::close(sub);
      if (::unlinkat(dir, name.c_str(), AT_REMOVEDIR) == 0)
        ++done;
      else if (errno == ENOTEMPTY)
        again = true;  // the rest of a big one next round
      else if (errno != ENOENT)
        Note("cannot remove", name);
    }
    return again || names.size() >= 4096;
  }
};

}  // namespace

Result<void> RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Ok();
    return Fail(Error::Internal("cannot look at " + path + ": " + std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      return Fail(Error::Internal("cannot remove " + path + ": " + std::strerror(errno)));
    return Ok();
  }
  int top = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (top < 0) return Fail(Error::Internal("cannot open " + path + ": " + std::strerror(errno)));
  Remover r{top};
  // Each round removes up to 64 levels of every subtree (and moves what is
  // deeper up here): a tree N levels deep takes about N / 64 rounds. A
  // round that removes nothing (what is left cannot be) is the last.
  for (;;) {
    unsigned long before = r.done;
    if (!r.EmptyDir(top, 0) || r.done == before) break;
  }
  ::close(top);
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) {
    std::string why = r.error.empty() ? std::strerror(errno) : r.error;
    return Fail(Error::Internal("cannot remove " + path + ": " + why));
  }
  return Ok();
}

}  // namespace kiln::runner
