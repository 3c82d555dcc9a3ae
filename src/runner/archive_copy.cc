#include "runner/archive_copy.h"

namespace kiln::runner {

Result<void> CopyEntry(archive* in, archive* disk, archive_entry* e, const std::string& name) {
  if (archive_write_header(disk, e) != ARCHIVE_OK)
    return Fail(
        Error::InvalidArgument("cannot extract " + name + ": " + archive_error_string(disk)));
  const void* buf;
  size_t size;
  la_int64_t offset;
  while (archive_read_data_block(in, &buf, &size, &offset) == ARCHIVE_OK)
    archive_write_data_block(disk, buf, size, offset);
  archive_write_finish_entry(disk);
  return Ok();
}

}  // namespace kiln::runner
