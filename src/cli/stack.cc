// `kiln stack build NAME --packages a,b`: a Debian root filesystem with the
// chosen packages, built by mmdebstrap from the host's apt sources and
// stored in the image store under NAME, so that zip codes with that stack
// (or runtime) run on it. Runs on the server's machine, as root.

#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "base/ids.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "runner/image_store.h"

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;

// The host's apt sources, which mmdebstrap reads as its mirror argument.
std::string HostSources() {
  for (const char* p : {"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"})
    if (fs::exists(p) && fs::file_size(p) > 0) return p;
  return "http://deb.debian.org/debian";
}

int Run(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "r", stdin);  // mmdebstrap reads sources from a non-tty stdin
    execvp(argv[0], argv.data());
    std::perror(argv[0]);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

void AddStackCommands(CLI::App& app) {
  auto data = std::make_shared<std::string>("data");
  auto name = std::make_shared<std::string>();
  auto packages = std::make_shared<std::vector<std::string>>();
  auto suite = std::make_shared<std::string>("bookworm");
  auto mirror = std::make_shared<std::string>();
  auto* stack = app.add_subcommand("stack", "Debian-based images for zip codes");
  stack->require_subcommand(1);
  stack->fallthrough();
  stack->add_option("--data", *data, "Data directory of the Kiln server")->envname("KILN_DATA");
  auto* build = stack->add_subcommand("build", "Build a stack with mmdebstrap");
  build->add_option("name", *name, "Stack name, e.g. python (the runtime it serves)")
      ->required()
      ->check(kNonEmpty);
  build->add_option("--packages", *packages, "Debian packages, comma separated")->delimiter(',');
  build->add_option("--suite", *suite, "Debian suite (default bookworm)");
  build->add_option("--mirror", *mirror, "Mirror URL or sources file (default: the host's)");
  build->callback([=] {
    // Before a build of minutes, not after it.
    if (*name == "busybox" || !runner::IsImageName(*name)) {
      const char* why = *name == "busybox" ? " (the built-in image's name)"
                                           : ": 1-255 letters, digits and . _ - : / @";
      std::fprintf(stderr, "kiln: %s cannot name a stack%s\n", name->c_str(), why);
      std::exit(1);
    }
    NoteDataDir(*data);
    fs::path tmp = fs::path(*data) / "images" / ("stack-" + RandomHex(6) + ".tar");
    std::error_code ec;
    fs::create_directories(tmp.parent_path(), ec);
    std::vector<std::string> args = {"mmdebstrap", "--variant=essential", "--format=tar",
                                     "--quiet"};
    if (!packages->empty()) {
      std::string list;
      for (const auto& p : *packages) list += (list.empty() ? "" : ",") + p;
      args.push_back("--include=" + list);
    }
    args.insert(args.end(), {*suite, tmp.string(), mirror->empty() ? HostSources() : *mirror});
    std::fprintf(stderr, "kiln: building %s with mmdebstrap (%s)...\n", name->c_str(),
                 suite->c_str());
    int rc = Run(args);
    if (rc != 0) {
      fs::remove(tmp, ec);
      std::fprintf(stderr, "kiln: mmdebstrap failed (exit %d)%s\n", rc,
                   rc == 127 ? ": install it with apt-get install mmdebstrap" : "");
      std::exit(1);
    }
    auto img = runner::ImageStore(*data + "/images").ImportRootfs(tmp.string(), *name);
    fs::remove(tmp, ec);
    if (!img) {
      std::fprintf(stderr, "kiln: %s\n", img.error().message().c_str());
      std::exit(1);
    }
    std::printf("%s  %s\n", img->id.c_str(), name->c_str());
    std::exit(0);
  });
}

}  // namespace kiln::cli
