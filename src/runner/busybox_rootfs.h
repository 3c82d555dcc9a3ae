// The built-in "busybox" image: a root filesystem holding the static
// busybox binary (Debian's busybox-static) and a link per applet. Used by
// the tests and by codes that say "image":"busybox".
#pragma once

#include <string>

#include "base/error.h"

namespace kiln::runner {

// Builds the rootfs in `dir` (created) from `busybox` (default: the first
// static busybox found). Unavailable when there is none.
Result<void> BuildBusyboxRootfs(const std::string& dir, std::string busybox = "");

}  // namespace kiln::runner
