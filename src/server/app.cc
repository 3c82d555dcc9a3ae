#include "server/app.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "access/access.h"
#include "api/api.h"
#include "api/auth.h"
#include "api/errors.h"
#include "api/upload_slots.h"
#include "base/thread_name.h"
#include "http/server.h"
#include "mq/engine.h"
#include "runner/image_store.h"
#include "runner/runc.h"
#include "server/push_transport.h"
#include "store/rocks/rocks_store.h"
#include "worker/service.h"

namespace kiln::server {

namespace fs = std::filesystem;

struct App::Impl {
  Config config;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<mq::Engine> engine;
  std::unique_ptr<access::Access> access;
  http::Router router;
  std::unique_ptr<http::Server> server;
  std::unique_ptr<PushTransport> push;
  std::unique_ptr<runner::ImageStore> images;
  std::unique_ptr<runner::Runc> runc;
  std::unique_ptr<worker::Service> worker;
  // The task API's disk work (api/blocking.h, api.h Services).
  std::unique_ptr<boost::asio::thread_pool> uploads, disk;
  api::UploadSlots upload_slots;  // of code uploads under way (api/upload_slots.h)
  std::atomic<bool> stopping{false};

  std::thread ticker;
  std::mutex tick_mu;
  std::condition_variable tick_cv;

  ~Impl() {
    {
      std::lock_guard lock(tick_mu);
      stopping = true;
    }
    tick_cv.notify_all();
    if (ticker.joinable()) ticker.join();
    // A code upload still on its thread finishes first: it uses the
    // worker service, and hands its request back to an io context (stopped
    // by now, still there).
    if (uploads) uploads->join();
    if (disk) disk->join();
    // Posts still in the committer (an fsync past the stop's grace) hand
    // their answers to an io context: they finish while the contexts are
    // still there (stopped: the answers are dropped, nothing is lost).
    if (engine) engine->Flush();
    server.reset();
    // Pushes stop before the worker goes: ironworker:// deliveries call it.
    if (engine) engine->StopPushes();  // nothing reaches the transport after this
    push.reset();                      // before the engine: its callbacks call into it
    if (worker) worker->Stop();        // kills running tasks; they end as errors
    worker.reset();
    engine.reset();
    access.reset();
    store.reset();  // flushes the log
  }

  Result<void> FirstStart(uint16_t port);
};

namespace {

// Readable by its owner only from the start: written 0600 to a temporary
// file, synced, then renamed into place and the directory synced, so that a
// crash or a full disk leaves the old file or the whole new one, never an
// empty one.
Result<void> WriteSecretFile(const fs::path& path, const std::string& content) {
  fs::path tmp = path.string() + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 || ::fchmod(fd, 0600) != 0) {
    if (fd >= 0) ::close(fd);
    return Fail(Error::Internal("cannot write " + path.string()));
  }
  std::string text = content + "\n";
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  ok = ok && ::rename(tmp.c_str(), path.c_str()) == 0;
  if (ok) {
    int dir = ::open(path.parent_path().empty() ? "." : path.parent_path().c_str(),
                     O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    return Fail(Error::Internal("cannot write " + path.string()));
  }
  return Ok();
}

// The host clients reach this server at (iron.json, push acknowledgement
// urls): --public-host, else the listen host, a wildcard one as loopback,
// an IPv6 address in brackets.
std::string ReachableHost(const Config& config) {
  if (!config.public_host.empty()) return config.public_host;
  if (config.host == "0.0.0.0" || config.host == "::") return "127.0.0.1";
  if (config.host.find(':') != std::string::npos) return "[" + config.host + "]";
  return config.host;
}

// Whether `dir` may be made Kiln's data dir: a data dir already (RocksDB's
// CURRENT, or the admin token), or holding nothing but a fresh volume's
// lost+found and images that `kiln image import` or `kiln stack build` put
// there before the first start.
bool IsKilnsDir(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir / "CURRENT", ec) || fs::exists(dir / "admin.token", ec)) return true;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (auto name = entry.path().filename(); name != "lost+found" && name != "images") return false;
  return !ec;
}

}  // namespace

// Creates what a new installation needs: an admin token (kept in
// DATA/admin.token, mode 0600) and, when there is no project yet, a project
// with a token, printed once and written to ./iron.json.
Result<void> App::Impl::FirstStart(uint16_t port) {
  fs::path admin_file = fs::path(config.data_dir) / "admin.token";
  std::error_code ec;
  if (!fs::exists(admin_file) || fs::file_size(admin_file, ec) == 0) {  // an empty one: made anew
    // Removing the file is how the admin token is rotated: the ones made
    // here before (named "admin") are revoked first, so that a failure
    // leaves no file and the next start tries again. Admin tokens made
    // through POST /kiln/v1/tokens under another name stay.
    auto before = access->ListTokens();
    if (!before) return Fail(before.error());
    for (const auto& old : *before)
      if (old.admin && old.name == "admin" && old.project_id.empty()) {
        if (auto r = access->RevokeToken(old.id); !r) return Fail(r.error());
        spdlog::info("the earlier admin token {} is revoked", old.id);
      }
    auto t = access->CreateToken("", "admin", true);
    if (!t) return Fail(t.error());
    if (auto w = WriteSecretFile(admin_file, t->secret); !w) return w;
    spdlog::info("admin token written to {}", admin_file.string());
  }
  auto projects = access->ListProjects();
  if (!projects) return Fail(projects.error());
  if (!projects->empty()) {
    std::string ids;
    for (const auto& p : *projects) ids += (ids.empty() ? "" : ", ") + p.id;
    // The command as it would work from here: this server's port and data
    // dir (where the admin token is), the one project's id.
    std::string create = "kiln token create --project " +
                         (projects->size() == 1 ? projects->front().id : std::string("ID")) +
                         " --port " + std::to_string(port);
    if (config.data_dir != "data") create += " --data " + config.data_dir;
    std::printf(
        "\nKiln is serving project%s %s on http://%s:%u\n"
        "Connect: the Iron clients and `kiln mq ...` read ./iron.json when it is there;\n"
        "a new token: %s\n\n",
        projects->size() == 1 ? "" : "s", ids.c_str(), config.host.c_str(), port, create.c_str());
    std::fflush(stdout);
    return Ok();
  }

  auto p = access->CreateProject("default");
  if (!p) return Fail(p.error());
  auto t = access->CreateToken(p->id, "default");
  if (!t) return Fail(t.error());
  std::string host = ReachableHost(config);
  std::string json = "{\n  \"project_id\": \"" + p->id + "\",\n  \"token\": \"" + t->secret +
                     "\",\n  \"host\": \"" + host + "\",\n  \"port\": " + std::to_string(port) +
                     ",\n  \"scheme\": \"http\"\n}";
  std::string where = "not written: iron.json exists here";
  if (!config.write_iron_json) where = "not written";
  if (config.write_iron_json && !fs::exists("iron.json")) {
    if (auto w = WriteSecretFile("iron.json", json); w) {
      where = "written to " + fs::absolute("iron.json").string();
    } else {
      where = "not written: " + w.error().message();
      spdlog::warn("iron.json {}", where);
    }
  }
  std::printf(
      "\nKiln created project %s with token %s (iron.json %s)\n"
      "Try it:\n  curl -H 'Authorization: OAuth %s' -H 'Content-Type: application/json' \\\n"
      "    -d '{\"messages\":[{\"body\":\"hello\"}]}' "
      "http://%s:%u/3/projects/%s/queues/jobs/messages\n\n",
      p->id.c_str(), t->secret.c_str(), where.c_str(), t->secret.c_str(), host.c_str(), port,
      p->id.c_str());
  std::fflush(stdout);
  return Ok();
}

App::App(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
App::~App() = default;

Result<std::unique_ptr<App>> App::Open(const Config& given) {
  auto impl = std::make_unique<Impl>();
  impl->config = given;
  Config& config = impl->config;
  std::error_code ec;
  // Every path below is absolute, whatever the working directory is later.
  config.data_dir = fs::absolute(config.data_dir, ec).string();
  if (ec) return Fail(Error::Unavailable("no data dir " + given.data_dir + ": " + ec.message()));
  bool created = fs::create_directories(config.data_dir, ec);
  if (ec) return Fail(Error::Unavailable("cannot create " + config.data_dir + ": " + ec.message()));
  // Tokens, messages and task directories: no one else's to read or enter
  // (a task can leave setuid files in its directory). The directory is made
  // 0700, so it must be Kiln's own: new, empty (a fresh volume's lost+found
  // aside) or holding Kiln's store already, never /tmp or a home directory.
  if (!created && !IsKilnsDir(config.data_dir))
    return Fail(Error::Unavailable(
        "the data dir " + config.data_dir +
        " holds files that are not Kiln's: give Kiln a directory of its own (--data)"));
  fs::permissions(config.data_dir, fs::perms::owner_all, ec);

  auto started = std::chrono::steady_clock::now();
  auto store = store::rocks::Open({config.data_dir, config.fsync_interval_ms});
  if (!store) return Fail(store.error());
  impl->store = std::move(*store);
  impl->engine = std::make_unique<mq::Engine>(
      *impl->store, *SystemClock::Get(),
      mq::EngineOptions{.max_message_bytes = config.max_message_bytes,
                        .max_queues_per_project = config.max_queues_per_project,
                        .max_messages_per_project = config.max_messages_per_project});
  if (auto r = impl->engine->Recover(); !r) return Fail(r.error());
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  started)
                .count();
  spdlog::info("recovered {} queues, {} messages in {} ms", impl->engine->queue_count(),
               impl->engine->message_count(), ms);
  impl->access = std::make_unique<access::Access>(*impl->store, *SystemClock::Get());

  impl->images = std::make_unique<runner::ImageStore>(config.data_dir + "/images");
  impl->runc = std::make_unique<runner::Runc>();
  worker::ServiceOptions wo;
  wo.data_dir = fs::absolute(config.data_dir).string();
  wo.slots = config.runner_slots;
  wo.max_running_per_project = config.max_running_per_project;
  wo.max_queued_tasks_per_project = config.max_queued_tasks_per_project;
  wo.max_code_revisions = config.max_code_revisions;
  wo.max_package_bytes_per_project = config.project_package_quota_mb * (int64_t{1} << 20);
  wo.task_retention = std::chrono::hours(24) * config.task_retention_days;  // 0: kept
  wo.allow_host_network = config.allow_host_network;
  wo.max_task_memory_mb = config.max_task_memory_mb;
  wo.min_free_disk_bytes =
      config.task_disk_reserve_mb < 0 ? -1 : config.task_disk_reserve_mb * (int64_t{1} << 20);
  impl->worker = std::make_unique<worker::Service>(*impl->store, *SystemClock::Get(), *impl->images,
                                                   *impl->runc, wo);
  if (auto r = impl->worker->Recover(); !r) return Fail(r.error());
  if (config.runner_slots != 0) {
    if (auto why = impl->runc->Unavailable(); !why.empty())
      spdlog::warn("tasks will fail until containers can run: {}", why);
  }
  impl->worker->Start();  // with no slots, schedules still queue tasks

  impl->uploads = std::make_unique<boost::asio::thread_pool>(1);
  impl->disk = std::make_unique<boost::asio::thread_pool>(2);
  api::AddAllRoutes(impl->router,
                    {impl->engine.get(), impl->access.get(), &impl->stopping, impl->worker.get(),
                     impl->uploads.get(), impl->disk.get(), &impl->upload_slots});
  http::ServerOptions so;
  so.host = config.host;
  so.port = config.port;
  so.threads = config.threads;
  so.max_body_bytes = config.max_request_bytes;
  so.is_upload = [](std::string_view path) {  // POST /2/projects/{pid}/codes (§1.6)
    return path.starts_with("/2/projects/") && path.ends_with("/codes");
  };
  so.check_body = [access = impl->access.get(), slots = &impl->upload_slots,
                   is_upload = so.is_upload](
                      const http::Request& head,
                      std::shared_ptr<void>* admission) -> std::optional<http::Response> {
    // A large body (an upload, a big post) is taken only from a token good
    // for the project its path names (/2/projects/{pid}/..., /3/...), or an
    // admin token on other paths: the others are answered before it is read.
    std::string_view path = head.path;
    Result<access::Principal> ok = Fail(Error::Internal("unchecked"));
    std::string project;
    if (path.starts_with("/2/projects/") || path.starts_with("/3/projects/")) {
      path.remove_prefix(std::string_view("/2/projects/").size());
      project = std::string(path.substr(0, path.find('/')));
      ok = api::Authorize(*access, head, project);
    } else {
      ok = api::AuthorizeAdmin(*access, head);
    }
    if (!ok) return api::ErrorResponse(ok.error());
    // An upload takes its project's slot now, so that a burst of them is
    // answered before their bodies are read (api/upload_slots.h).
    if (head.method == "POST" && is_upload(head.path)) {
      auto slot = slots->Take(project);
      if (!slot) return api::ErrorResponse(slot.error());
      *admission = std::shared_ptr<api::UploadSlots::Held>(std::move(*slot));
    }
    return std::nullopt;
  };
  so.max_upload_bytes = config.max_upload_bytes;
  so.access_log = config.access_log;
  so.read_timeout = std::chrono::seconds(config.read_timeout_s);
  so.max_connections = config.max_connections;
  so.max_connections_per_address = config.max_connections_per_address;
  so.idle_timeout = std::chrono::seconds(config.idle_timeout_s);
  impl->server = std::make_unique<http::Server>(so, impl->router);
  return std::unique_ptr<App>(new App(std::move(impl)));
}

Result<uint16_t> App::Listen() {
  // iron.json is in place before the port opens: a script that waits for
  // the port and then reads it must find it.
  auto port = impl_->server->Listen([this](uint16_t bound) { return impl_->FirstStart(bound); });
  if (!port) return port;
  std::string self = ReachableHost(impl_->config) + ":" + std::to_string(*port);
  http::ClientOptions co;
  co.ca_file = impl_->config.push_ca_file;
  co.forbid_private = impl_->config.push_forbid_private;
  co.threads = std::max(1u, std::thread::hardware_concurrency());
  co.thread_name = "kiln-push";
  impl_->push = std::make_unique<PushTransport>(*impl_->engine, *impl_->access, impl_->worker.get(),
                                                co, self);
  impl_->engine->SetPushTransport(impl_->push.get(), "http://" + self);
  impl_->ticker = std::thread([impl = impl_.get()] {
    NameThisThread("kiln-tick");
    std::unique_lock lock(impl->tick_mu);
    while (!impl->stopping) {
      impl->tick_cv.wait_for(lock, std::chrono::milliseconds(100));
      lock.unlock();
      // One failed pass (out of memory, say) must not end the timers of
      // every queue: the next pass tries again.
      try {
        impl->engine->Tick();
      } catch (const std::exception& e) {
        spdlog::error("queue timers: {}", e.what());
      }
      lock.lock();
    }
  });
  spdlog::info("kiln listening on {}:{} (data in {})", impl_->config.host, *port,
               impl_->config.data_dir);
  return port;
}

void App::Run() { impl_->server->Run(); }

void App::Stop() {
  if (impl_->stopping.exchange(true)) return;
  spdlog::info("shutting down");
  impl_->tick_cv.notify_all();
  impl_->engine->WakeAll();                          // long polls answer now
  if (impl_->worker) impl_->worker->WakeWatchers();  // and task waits
  impl_->server->Stop();
}

}  // namespace kiln::server
