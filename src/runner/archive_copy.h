// One step shared by the image store and code packages: writing an archive
// member, header then data, through a libarchive disk writer. Internal to
// src/runner; stateless.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <string>

#include "base/error.h"

namespace kiln::runner {

// Writes member `e` (already renamed to its place) read from `in` to `disk`.
// InvalidArgument naming `name` when the writer refuses it, or when its data
// runs past the size its header says or, with `budget`, past what is left
// of it (each member's bytes are taken off).
Result<void> CopyEntry(archive* in, archive* disk, archive_entry* e, const std::string& name,
                       int64_t* budget = nullptr);

}  // namespace kiln::runner
