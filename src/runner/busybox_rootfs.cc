#include "runner/busybox_rootfs.h"

#include <cstdio>
#include <filesystem>
#include <memory>

namespace kiln::runner {
namespace fs = std::filesystem;

Result<void> BuildBusyboxRootfs(const std::string& dir, std::string busybox) {
  if (busybox.empty()) {
    for (const char* p : {"/bin/busybox", "/usr/bin/busybox"})
      if (fs::exists(p)) {
        busybox = p;
        break;
      }
  }
  if (busybox.empty() || !fs::exists(busybox))
    return Fail(Error::Unavailable("busybox is not installed (Debian package busybox-static)"));
  std::error_code ec;
  fs::path root = dir;
  for (const char* d : {"bin", "etc", "proc", "dev", "sys", "tmp", "task"})
    fs::create_directories(root / d, ec);
  fs::copy_file(busybox, root / "bin" / "busybox", fs::copy_options::overwrite_existing, ec);
  if (ec) return Fail(Error::Internal("cannot copy busybox: " + ec.message()));
  std::unique_ptr<FILE, int (*)(FILE*)> list(popen((busybox + " --list").c_str(), "r"), pclose);
  if (!list) return Fail(Error::Internal("cannot list busybox applets"));
  char line[256];
  while (fgets(line, sizeof line, list.get())) {
    std::string applet(line);
    while (!applet.empty() && (applet.back() == '\n' || applet.back() == '\r')) applet.pop_back();
    if (applet.empty() || applet == "busybox" || applet.find('/') != std::string::npos) continue;
    fs::create_symlink("busybox", root / "bin" / applet, ec);
  }
  FILE* passwd = fopen((root / "etc" / "passwd").c_str(), "w");
  if (passwd) {
    fputs("root:x:0:0:root:/task:/bin/sh\n", passwd);
    fclose(passwd);
  }
  return Ok();
}

}  // namespace kiln::runner
