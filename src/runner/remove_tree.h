// Removes a directory tree that a task wrote, whatever its shape: links
// are removed, never followed; memory and open descriptors stay bounded
// however deep it nests (a task can make 100,000 levels before it is
// stopped, past PATH_MAX, and std::filesystem::remove_all of GCC 12 then
// fails, or holds every level's full path at once). Subtrees deeper than
// 64 levels below `path` are renamed up to `path` and removed from there.
// Callers: worker::Service (task dirs), runner::Runc (run dirs). Any thread.
#pragma once

#include <string>

#include "base/error.h"

namespace kiln::runner {

// Removes `path` (a directory and all it holds, or a file or link). Ok
// when nothing is there afterwards (also when nothing was); else the first
// error, having removed what it could.
Result<void> RemoveTree(const std::string& path);

}  // namespace kiln::runner
