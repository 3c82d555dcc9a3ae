// kiln: `kiln serve` runs the server; every other noun is the CLI.

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <charconv>
#include <thread>

#include "cli/cli.h"
#include "server/app.h"

namespace {

// Every connection, outbound delivery and RocksDB file is a descriptor, and
// the usual soft limit (1024) is far below --max-connections: raise it to
// the hard limit, as the administrator allows.
void RaiseOpenFileLimit(size_t max_connections) {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return;
  if (r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) getrlimit(RLIMIT_NOFILE, &r);
  }
  if (r.rlim_cur != RLIM_INFINITY && r.rlim_cur < max_connections + 2048)
    spdlog::warn(
        "open files are limited to {} (ulimit -n): fewer than --max-connections {} and "
        "the server's own; raise the hard limit",
        r.rlim_cur, max_connections);
}

int Serve(const kiln::server::Config& config, const std::string& log_level) {
  std::string level = log_level;  // checked against the names, in any case
  for (char& c : level) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  // Block the stop signals in every thread; one thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  RaiseOpenFileLimit(config.max_connections);

  auto app = kiln::server::App::Open(config);
  if (!app) {
    spdlog::error("{}", app.error().message());
    return 1;
  }
  auto port = (*app)->Listen();
  if (!port) {
    spdlog::error("{}", port.error().message());
    return 1;
  }
  std::thread signals([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    (*app)->Stop();
  });
  signals.detach();
  (*app)->Run();
  app->reset();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Kiln: durable message queues and tasks in containers, Iron-compatible"};
  app.require_subcommand(1);
  app.set_version_flag("--version", KILN_VERSION);

  kiln::server::Config config;
  std::string listen = "127.0.0.1:8080", fsync = "always", log_level = "info";
  bool quiet = false;
  auto* serve = app.add_subcommand("serve", "Run the Kiln server");
  // serve --help shows each option's default (the client commands' options
  // default to "not given", which would read as a value).
  serve->option_defaults()->always_capture_default();
  serve->add_option("--listen", listen, "HOST:PORT to listen on")->envname("KILN_LISTEN");
  serve->add_option("--data", config.data_dir, "Data directory")->envname("KILN_DATA");
  serve->add_option("--threads", config.threads, "I/O threads (0: one per core)")
      ->check(CLI::Range(0, 256))
      ->envname("KILN_THREADS");
  serve->add_option("--fsync", fsync, "always, or interval:DURATION (e.g. interval:50ms)")
      ->envname("KILN_FSYNC");
  serve
      ->add_option("--max-queues-per-project", config.max_queues_per_project,
                   "Queues one project may have")
      ->check(CLI::Range(size_t{1}, size_t{1} << 32))
      ->envname("KILN_MAX_QUEUES_PER_PROJECT");
  serve
      ->add_option("--max-messages-per-project", config.max_messages_per_project,
                   "Messages one project's queues may hold in all: a post past it is refused "
                   "(0: no limit)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 40))
      ->envname("KILN_MAX_MESSAGES_PER_PROJECT");
  serve->add_option("--max-message-bytes", config.max_message_bytes, "Largest message body")
      ->envname("KILN_MAX_MESSAGE_BYTES");
  serve->add_option("--max-request-bytes", config.max_request_bytes, "Largest request body")
      ->envname("KILN_MAX_REQUEST_BYTES");
  serve->add_option("--max-upload-bytes", config.max_upload_bytes, "Largest code package upload")
      ->envname("KILN_MAX_UPLOAD_BYTES");
  serve->add_option("--max-connections", config.max_connections, "Open connections at most")
      ->envname("KILN_MAX_CONNECTIONS")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  serve
      ->add_option("--max-connections-per-address", config.max_connections_per_address,
                   "Open connections from one client address at most")
      ->envname("KILN_MAX_CONNECTIONS_PER_ADDRESS")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  serve->add_option("--read-timeout", config.read_timeout_s, "Seconds to receive a whole request")
      ->envname("KILN_READ_TIMEOUT")
      ->check(CLI::Range(1, 3600));
  serve
      ->add_option("--idle-timeout", config.idle_timeout_s,
                   "Seconds a keep-alive connection may wait between requests")
      ->envname("KILN_IDLE_TIMEOUT")
      ->check(CLI::Range(1, 3600));
  serve->add_flag("--no-access-log", quiet, "Do not log every request")
      ->envname("KILN_NO_ACCESS_LOG");
  serve->add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off")
      ->envname("KILN_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"},
                            CLI::ignore_case));
  serve
      ->add_option("--runner-slots", config.runner_slots,
                   "Tasks run at once here (-1: one per core, 0: no runner)")
      ->check(CLI::Range(-1, 1 << 16))
      ->envname("KILN_RUNNER_SLOTS");
  serve
      ->add_option("--max-running-per-project", config.max_running_per_project,
                   "Tasks of one project run at once at most (0: no limit; slots are shared "
                   "fairly between projects either way)")
      ->check(CLI::Range(0, 1 << 20))
      ->envname("KILN_MAX_RUNNING_PER_PROJECT");
  serve
      ->add_option("--max-queued-tasks-per-project", config.max_queued_tasks_per_project,
                   "Queued tasks one project may have")
      ->check(CLI::Range(size_t{1}, size_t{1} << 32))
      ->envname("KILN_MAX_QUEUED_TASKS_PER_PROJECT");
  serve
      ->add_option("--max-code-revisions", config.max_code_revisions,
                   "Revisions kept of each code: an upload past it removes the oldest that no "
                   "queued or running task needs (0: keep all)")
      ->check(CLI::Range(0, 1 << 20))
      ->envname("KILN_MAX_CODE_REVISIONS");
  serve
      ->add_option("--project-package-quota-mb", config.project_package_quota_mb,
                   "MiB the code packages of one project may take, every kept revision counted: "
                   "an upload past it is refused (0: no limit)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->envname("KILN_PROJECT_PACKAGE_QUOTA_MB");
  serve
      ->add_option("--task-retention-days", config.task_retention_days,
                   "Days finished tasks and their logs are kept (0: for ever)")
      ->check(CLI::Range(0, 36500))
      ->envname("KILN_TASK_RETENTION_DAYS");
  serve
      ->add_option("--task-disk-reserve", config.task_disk_reserve_mb,
                   "MB the data dir keeps free: tasks writing past it are stopped (-1: 5%, at "
                   "most 1024; 0: off)")
      ->check(CLI::Range(int64_t{-1}, int64_t{1} << 30))
      ->envname("KILN_TASK_DISK_RESERVE");
  serve
      ->add_option("--max-task-memory", config.max_task_memory_mb,
                   "Most MB of memory a code may ask for (-1: this host's memory)")
      ->check(CLI::Range(int64_t{8}, int64_t{1} << 20) | CLI::IsMember({int64_t{-1}}))
      ->envname("KILN_MAX_TASK_MEMORY");
  serve->add_option("--public-host", config.public_host,
                    "Host for iron.json and push acknowledgement urls");
  serve
      ->add_option("--push-ca-file", config.push_ca_file,
                   "PEM file of extra CAs to trust for https subscribers")
      ->envname("KILN_PUSH_CA_FILE");
  serve
      ->add_flag("--allow-host-network", config.allow_host_network,
                 "Let codes run tasks on the host's network (network: host)")
      ->envname("KILN_ALLOW_HOST_NETWORK");
  serve
      ->add_flag("--push-forbid-private", config.push_forbid_private,
                 "Refuse push to loopback, private and link-local addresses (SSRF guard)")
      ->envname("KILN_PUSH_FORBID_PRIVATE");
  serve->callback([&] {
    // HOST:PORT, an IPv6 address in brackets ([::1]:8080); the port a
    // number 0-65535 (0: any free one), nothing after it.
    auto colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0)
      throw CLI::ValidationError("--listen", "expected HOST:PORT, not " + listen);
    std::string host = listen.substr(0, colon), port = listen.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
      host = host.substr(1, host.size() - 2);
    unsigned n = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || n > 65535)
      throw CLI::ValidationError("--listen", "the port must be a number 0-65535, not " + port);
    config.host = host;
    config.port = static_cast<uint16_t>(n);
    if (fsync == "always") {
      config.fsync_interval_ms = 0;
    } else if (fsync.rfind("interval:", 0) == 0) {
      // N ms or N s, nothing else: "50us" or "1m" are not guessed at.
      std::string d = fsync.substr(9);
      int mult = 0;
      if (d.size() > 2 && d.ends_with("ms")) {
        d.resize(d.size() - 2);
        mult = 1;
      } else if (d.size() > 1 && d.back() == 's' &&
                 std::isdigit(static_cast<unsigned char>(d[d.size() - 2]))) {
        d.pop_back();
        mult = 1000;
      }
      int n = 0;
      auto [end, ec] = std::from_chars(d.data(), d.data() + d.size(), n);
      if (mult == 0 || ec != std::errc() || end != d.data() + d.size() || n <= 0 ||
          n > 3600'000 / mult)
        throw CLI::ValidationError("--fsync",
                                   "expected interval:Nms or interval:Ns, N from 1 to an hour");
      config.fsync_interval_ms = n * mult;
    } else {
      throw CLI::ValidationError("--fsync", "expected always or interval:DURATION");
    }
    config.access_log = !quiet;
    std::exit(Serve(config, log_level));
  });

  kiln::cli::AddMqCommands(app);
  kiln::cli::AddAdminCommands(app);
  kiln::cli::AddImageCommands(app);
  kiln::cli::AddWorkerCommands(app);
  kiln::cli::AddStackCommands(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
