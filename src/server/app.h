// The Kiln server as an object: opens the store, recovers the queues, wires
// the API onto the HTTP server, runs the maintenance ticker, and shuts down
// in order. `kiln serve` is a thin main around it; tests may embed it.
// Open, Listen, Run and Stop are called from the controlling thread; Stop
// may also come from a signal thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "base/error.h"

namespace kiln::server {

struct Config {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  std::string data_dir = "data";
  int threads = 0;            // 0: one per core
  int fsync_interval_ms = 0;  // 0: fsync every post before answering
  size_t max_message_bytes = 64 * 1024;
  size_t max_queues_per_project = 100'000;
  uint64_t max_messages_per_project = 10'000'000;  // in all its queues; 0: no limit
  size_t max_request_bytes = 1 << 20;
  size_t max_upload_bytes = 64 << 20;         // code packages
  int read_timeout_s = 30;                    // to receive one whole request
  size_t max_connections = 10000;             // open at once
  size_t max_connections_per_address = 5000;  // open at once from one client address
  int idle_timeout_s = 75;                    // between requests on a keep-alive connection
  bool access_log = true;
  bool write_iron_json = true;      // on first start, into the working directory
  std::string public_host;          // written to iron.json; default: host
  int runner_slots = -1;            // tasks at once on this server; -1: one per core, 0: no runner
  int max_running_per_project = 0;  // tasks of one project at once; 0: no limit
  size_t max_queued_tasks_per_project = 1'000'000;
  int max_code_revisions = 50;               // kept of each code (0: all)
  int64_t project_package_quota_mb = 10240;  // code packages one project keeps (0: no limit)
  int task_retention_days = 7;               // finished tasks and their logs are kept this long
  // Push delivery.
  std::string push_ca_file;          // extra CAs to trust for https subscribers
  bool push_forbid_private = false;  // refuse loopback and private subscriber addresses
  bool allow_host_network = false;   // codes may run tasks on the host's network
  // Tasks writing to a data dir with less free are stopped; -1: 5% of it, at most 1 GiB.
  int64_t task_disk_reserve_mb = -1;
  int64_t max_task_memory_mb = -1;  // -1: the host's physical memory
};

class App {
 public:
  ~App();
  // Errors: Unavailable (data dir locked), Internal (store).
  static Result<std::unique_ptr<App>> Open(const Config& config);
  Result<uint16_t> Listen();
  void Run();
  void Stop();

 private:
  struct Impl;
  explicit App(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::server
