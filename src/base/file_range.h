// A byte range of an open file, sent as a response body straight from the
// file (http::Response::file), so that a large download or log costs a
// connection no memory for its body however slowly the client reads. The
// range is fixed when opened: a file that grows later (a running task's
// log) is sent as it was. The file is closed when the last holder lets go.
// Immutable once made; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/error.h"

namespace kiln {

class FileRange {
 public:
  // `path` from byte `offset` to its end (an empty range past the end).
  // NotFound when there is no such file; Internal when it cannot be read.
  static Result<std::shared_ptr<const FileRange>> Open(const std::string& path,
                                                       uint64_t offset = 0);
  // A range of no bytes, of no file.
  static std::shared_ptr<const FileRange> Empty();

  FileRange(const FileRange&) = delete;
  FileRange& operator=(const FileRange&) = delete;
  ~FileRange();

  int fd() const { return fd_; }  // -1 for Empty()
  uint64_t offset() const { return offset_; }
  uint64_t size() const { return size_; }
  // The bytes of the range, read now: for tests and small files.
  Result<std::string> Read() const;

 private:
  FileRange(int fd, uint64_t offset, uint64_t size) : fd_(fd), offset_(offset), size_(size) {}
  int fd_;
  uint64_t offset_;
  uint64_t size_;
};

}  // namespace kiln
