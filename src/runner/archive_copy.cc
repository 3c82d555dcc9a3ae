#include "runner/archive_copy.h"

namespace kiln::runner {

namespace {
std::string Why(archive* a) {
  const char* e = archive_error_string(a);
  return e ? e : "unknown error";
}
}  // namespace

Result<void> CopyEntry(archive* in, archive* disk, archive_entry* e, const std::string& name,
                       int64_t* budget) {
  // A member whose data runs past the size its header says (a zip entry
  // that says 0 bytes and inflates to a gigabyte) is refused: the checks
  // at upload counted the sizes headers say.
  la_int64_t declared = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
  if (archive_write_header(disk, e) != ARCHIVE_OK)
    return Fail(Error::InvalidArgument("cannot extract " + name + ": " + Why(disk)));
  const void* buf;
  size_t size;
  la_int64_t offset;
  int r;
  while ((r = archive_read_data_block(in, &buf, &size, &offset)) == ARCHIVE_OK ||
         r == ARCHIVE_WARN) {
    if (declared >= 0 &&
        (offset < 0 || offset > declared || size > static_cast<size_t>(declared - offset)))
      return Fail(Error::InvalidArgument("cannot extract " + name + ": it holds more than the " +
                                         std::to_string(declared) + " bytes its header says"));
    if (budget && (*budget -= static_cast<int64_t>(size)) < 0)
      return Fail(Error::InvalidArgument("cannot extract " + name +
                                         ": the archive unpacks to more than it may"));
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
