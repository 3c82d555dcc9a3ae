#include "base/file_range.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace kiln {

Result<std::shared_ptr<const FileRange>> FileRange::Open(const std::string& path, uint64_t offset) {
  // Not blocking on a FIFO, nor following a link planted where a file was.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return Fail(Error::NotFound("no file " + path));
    return Fail(Error::Internal("cannot open " + path + ": " + std::strerror(errno)));
  }
  struct stat st {};
  std::string problem;
  if (::fstat(fd, &st) != 0)
    problem = "cannot stat " + path + ": " + std::strerror(errno);
  else if (!S_ISREG(st.st_mode))
    problem = path + " is not a regular file";
  if (!problem.empty()) {
    ::close(fd);
    return Fail(Error::Internal(problem));
  }
  auto end = static_cast<uint64_t>(st.st_size);
  offset = std::min(offset, end);
  return std::shared_ptr<const FileRange>(new FileRange(fd, offset, end - offset));
}

std::shared_ptr<const FileRange> FileRange::Empty() {
  return std::shared_ptr<const FileRange>(new FileRange(-1, 0, 0));
}

FileRange::~FileRange() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::string> FileRange::Read() const {
  std::string out(size_, '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::pread(fd_, out.data() + got, out.size() - got, static_cast<off_t>(offset_ + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Fail(Error::Internal(std::string("cannot read: ") + std::strerror(errno)));
    if (n == 0) break;  // cut short since it was opened
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

}  // namespace kiln
