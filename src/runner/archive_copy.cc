#include "runner/archive_copy.h"

namespace kiln::runner {

namespace {
std::string Why(archive* a) {
  const char* e = archive_error_string(a);
  return e ? e : "unknown error";
}
}  // namespace

Result<void> CopyEntry(archive* in, archive* disk, archive_entry* e, const std::string& name) {
  if (archive_write_header(disk, e) != ARCHIVE_OK)
    return Fail(Error::InvalidArgument("cannot extract " + name + ": " + Why(disk)));
  const void* buf;
  size_t size;
  la_int64_t offset;
  int r;
  while ((r = archive_read_data_block(in, &buf, &size, &offset)) == ARCHIVE_OK ||
         r == ARCHIVE_WARN) {
    // A full disk, say: the entry would be cut short without a word.
    if (archive_write_data_block(disk, buf, size, offset) < ARCHIVE_WARN)
      return Fail(Error::Unavailable("cannot write " + name + ": " + Why(disk)));
  }
  if (r != ARCHIVE_EOF) return Fail(Error::InvalidArgument("cannot read " + name + ": " + Why(in)));
  if (archive_write_finish_entry(disk) < ARCHIVE_WARN)
    return Fail(Error::Unavailable("cannot write " + name + ": " + Why(disk)));
  return Ok();
}

}  // namespace kiln::runner
