#include "worker/service.h"

#include <fcntl.h>
#include <rapidjson/document.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <sstream>

#include "base/ids.h"
#include "base/thread_name.h"
#include "runner/code_package.h"
#include "runner/disk_usage.h"
#include "runner/remove_tree.h"
#include "worker/schedule.h"

namespace kiln::worker {
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxPayload = 64 * 1024;
constexpr size_t kMaxCommand = 16 * 1024;    // a code's command
constexpr size_t kMaxEnvBytes = 64 * 1024;   // a code's env_vars, names and values
constexpr int64_t kMaxUnpacked = 1LL << 30;  // what a zip may unpack to
constexpr char kProgressFile[] = ".progress.json";
constexpr size_t kMaxProgressFile = 4096;    // what is read of it
constexpr size_t kMaxProgressMsg = 4096;     // a progress msg set through the API
constexpr size_t kMaxActiveSchedules = 100;  // per project

// A task's or schedule's label, cluster and name: kept in memory with every
// task, so bounded.
constexpr size_t kMaxTagBytes = 255;
constexpr TimeMs kYear10000 = TimeMs{253402300800} * 1000;

Result<void> CheckTags(const std::string& label, const std::string& cluster) {
  for (auto [key, value] : {std::pair{"label", &label}, std::pair{"cluster", &cluster}})
    if (value->size() > kMaxTagBytes)
      return Fail(Error::InvalidArgument(std::string(key) + " is at most " +
                                         std::to_string(kMaxTagBytes) + " bytes"));
  return Ok();
}

Error TooManySchedules() {  // a limit: 403 (§1.4)
  return Error::PermissionDenied("a project has at most 100 active schedules");
}

// Files in a task's directory, which the task (and its code package) may
// have filled with symlinks, FIFOs or devices: never followed or blocked on.
// Reads at most `max` bytes of a regular file; "" otherwise.
std::string ReadTaskFile(const std::string& path, size_t max) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return "";
  struct stat st;
  std::string out;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    out.resize(max);
    ssize_t n = ::read(fd, out.data(), max);
    out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  ::close(fd);
  return out;
}

// Writes all of `bytes` to `fd`; false on an error.
bool WriteFully(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// A task's work dir, however deep the task nested it (runner::RemoveTree);
// what cannot be removed is logged and left.
void RemoveRunDir(const fs::path& dir) {
  if (auto r = runner::RemoveTree(dir.string()); !r)
    spdlog::error("cannot remove {}: {}", dir.string(), r.error().message());
}

// Replaces whatever is at `path` (a symlink from the package, say: removed,
// not followed) with a new file holding `bytes`.
Result<void> WriteTaskFile(const std::string& path, const std::string& bytes) {
  if (auto r = runner::RemoveTree(path); !r) return r;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return Fail(Error::Internal("cannot write " + path + ": " + std::strerror(errno)));
  bool ok = WriteFully(fd, bytes);
  ::close(fd);
  if (!ok) return Fail(Error::Internal("cannot write " + path));
  return Ok();
}

// Writes `bytes` to a new file at `path` and fsyncs it.
Result<void> WriteSynced(const std::string& path, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Fail(Error::Unavailable("cannot write " + path + ": " + std::strerror(errno)));
  bool ok = WriteFully(fd, bytes) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) {
    ::unlink(path.c_str());
    return Fail(Error::Unavailable("cannot write " + path + ": " + std::strerror(errno)));
  }
  return Ok();
}

// The last `n` bytes of the file ("" when it cannot be read).
std::string Tail(const std::string& path, size_t n) {
  std::error_code ec;
  uint64_t size = fs::file_size(path, ec);
  if (ec) return {};
  auto file = FileRange::Open(path, size > n ? size - n : 0);
  if (!file) return {};
  auto s = (*file)->Read();
  if (!s) return {};
  return s->size() > n ? s->substr(s->size() - n) : *s;
}

std::string PayloadKey(const std::string& task_id) { return "payload/" + task_id; }

std::string RevKey(const std::string& id, int64_t rev) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%010lld", static_cast<long long>(rev));
  return "coderev/" + id + "/" + buf;
}

template <typename T>
std::vector<T> Page(std::vector<T> all, int page, int per_page) {
  size_t from = static_cast<size_t>(std::max(page, 0)) * static_cast<size_t>(per_page);
  if (from >= all.size()) return {};
  size_t to = std::min(all.size(), from + static_cast<size_t>(per_page));
  return std::vector<T>(std::make_move_iterator(all.begin() + static_cast<ptrdiff_t>(from)),
                        std::make_move_iterator(all.begin() + static_cast<ptrdiff_t>(to)));
}

// How a zip code's runtime runs its file_name, with the arguments of the
// contract (iron-api.md §3.6) after it.
std::string RuntimeCommand(const Code& c) {
  static const std::map<std::string, std::string> kInterpreters = {
      {"sh", "sh"},     {"bash", "bash"}, {"python", "python3"}, {"python3", "python3"},
      {"node", "node"}, {"ruby", "ruby"}, {"php", "php"},        {"binary", ""}};
  auto it = kInterpreters.find(c.runtime.empty() ? "sh" : c.runtime);
  std::string interp = it == kInterpreters.end() ? c.runtime : it->second;
  std::string file = "'" + c.file_name + "'";  // file names were checked: no quotes
  return (interp.empty() ? "'./" + c.file_name + "'" : interp + " " + file) +
         " -d \"$TASK_DIR\" -payload \"$PAYLOAD_FILE\" -config \"$CONFIG_FILE\" -id \"$TASK_ID\"" +
         " ${SCHEDULE_ID:+-schedule_id \"$SCHEDULE_ID\"}";
}

// The image a code runs on: its stack or image, else the runtime's stack.
std::string ImageOf(const Code& c) {
  if (!c.stack.empty()) return c.stack;
  if (!c.image.empty()) return c.image;
  if (c.runtime.empty() || c.runtime == "sh" || c.runtime == "binary") return "busybox";
  return c.runtime;
}

// `bytes` in MB with one decimal, rounded up ("16.1": just over 16).
std::string MegabytesUp(int64_t bytes) {
  int64_t tenths = (bytes * 10 + (int64_t{1} << 20) - 1) >> 20;
  return std::to_string(tenths / 10) + "." + std::to_string(tenths % 10);
}

// Why the task dir's watch stopped a task ("" when it did not).
std::string DiskStopMessage(const runner::RunResult& r, int64_t disk_mb, int64_t min_free_bytes) {
  switch (r.disk_stop) {
    case runner::DiskStop::kNone:
      return "";
    case runner::DiskStop::kOverLimit:
      return "Task dir over its disk limit (" + std::to_string(disk_mb) + " MB): it held " +
             MegabytesUp(r.task_dir_bytes) + " MB";
    case runner::DiskStop::kTooDeep:
      return "Task dir nests directories deeper than " + std::to_string(runner::kMaxMeasuredDepth) +
             " levels, past what its disk limit measures";
    case runner::DiskStop::kTooMany:
      return "Task dir holds more than " + std::to_string(runner::kMaxMeasuredEntries) +
             " files and directories, past what its disk limit measures";
    case runner::DiskStop::kDiskFull:
      return "Stopped: the server's disk has less than " + std::to_string(min_free_bytes >> 20) +
             " MB free and the task went on writing to its task dir";
  }
  return "";
}

// ServiceOptions::min_free_disk_bytes's -1: 5% of the data dir's
// filesystem, at most 1 GiB (0 when it cannot be read).
int64_t DefaultMinFreeDisk(const std::string& data_dir) {
  struct statvfs fs;
  if (statvfs(data_dir.c_str(), &fs) != 0) return 0;
  int64_t size = static_cast<int64_t>(fs.f_blocks) * static_cast<int64_t>(fs.f_frsize);
  return std::min<int64_t>(size / 20, int64_t{1} << 30);
}

}  // namespace

Service::Service(store::Store& store, const Clock& clock, runner::ImageStore& images,
                 const runner::Runc& runc, ServiceOptions options)
    : store_(store), clock_(clock), images_(images), runc_(runc), options_(std::move(options)) {
  if (options_.slots < 0)
    options_.slots = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  if (options_.min_free_disk_bytes < 0)
    options_.min_free_disk_bytes = DefaultMinFreeDisk(options_.data_dir);
  if (options_.max_task_memory_mb < 0) {
    int64_t ram = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
    options_.max_task_memory_mb = ram > 0 ? std::min(ram >> 20, kMaxMemoryMb) : kMaxMemoryMb;
  }
}

Service::~Service() { Stop(); }

std::string Service::LogPath(const std::string& id) const {
  return options_.data_dir + "/task-logs/" + id + ".log";
}
std::string Service::PackagePath(const std::string& code_id, int64_t rev) const {
  return options_.data_dir + "/codes/" + code_id + "/" + std::to_string(rev) + ".zip";
}
std::string Service::TaskDir(const std::string& id) const {
  return options_.data_dir + "/task-work/" + id + "/task";
}

Result<void> Service::SaveAll(const std::vector<const Task*>& tasks,
                              store::Store::WorkerRecords with) {
  with.reserve(with.size() + tasks.size());
  for (const Task* t : tasks) with.emplace_back("task/" + t->id, EncodeTask(*t));
  return store_.PutWorkerRecords(with);
}

Result<std::string> Service::PayloadOf(const std::string& task_id) const {
  auto p = store_.GetWorkerRecord(PayloadKey(task_id));
  if (p) return p;
  if (p.error().code() == ErrorCode::kNotFound) return std::string();  // an empty payload
  return Fail(
      Error::Internal("cannot read the payload of task " + task_id + ": " + p.error().message()));
}

Result<Task> Service::WithPayload(Task t) const {
  auto p = PayloadOf(t.id);
  if (!p) return Fail(p.error());
  if (p->empty()) {
    // None, or expired (with its task) since `t` was copied.
    std::lock_guard lock(mu_);
    if (!tasks_.count(t.id)) return Fail(Error::NotFound("Task not found"));
  }
  t.payload = std::move(*p);
  return t;
}

Result<void> Service::Save(const Task& t) { return SaveAll({&t}); }

void Service::SaveOrLog(const Task& t) {
  if (auto r = Save(t); !r)
    spdlog::error("task {}: cannot record it as {}: {}", t.id, StateName(t.state),
                  r.error().message());
}

void Service::EndQueuedLocked(Task& t, const std::string& msg) {
  t.state = TaskState::kCancelled;
  t.msg = msg;
  t.end_time = t.updated_at = clock_.NowMs();
  WakeWatchersLocked(t.id);
}

Result<int64_t> Service::CancelQueuedLocked(const std::string& code_id, const std::string& msg) {
  std::vector<Task*> found;
  for (const auto& [project, queue] : queued_)
    for (const auto& key : queue)
      if (Task& t = tasks_.at(std::get<2>(key)); t.code_id == code_id) found.push_back(&t);
  std::vector<const Task*> ended;
  for (Task* t : found) {
    UnqueueLocked(*t);
    EndQueuedLocked(*t, msg);
    ended.push_back(t);
  }
  // One write for all of them. Should it fail, they stay cancelled here
  // (none runs) and the caller hears why; a restart would queue them again.
  if (auto r = SaveAll(ended); !r) return Fail(r.error());
  return static_cast<int64_t>(ended.size());
}

void Service::WakeWatchersLocked(const std::string& id) {
  auto [from, to] = watchers_.equal_range(id);
  for (auto it = from; it != to; ++it) (*it->second)();
  watchers_.erase(from, to);
}

Result<void> Service::Recover() {
  std::lock_guard lock(mu_);
  auto r = store_.ForEachWorkerRecord("code/", [&](std::string_view, std::string_view v) {
    if (auto c = DecodeCode(v)) {
      code_by_name_[{c->project_id, c->name}] = c->id;
      codes_[c->id] = std::move(*c);
    }
  });
  if (!r) return r;
  r = store_.ForEachWorkerRecord("coderev/", [&](std::string_view, std::string_view v) {
    if (auto c = DecodeCode(v)) revisions_[{c->id, c->rev}] = std::move(*c);
  });
  if (!r) return r;
  // Codes written before revisions were kept: the latest is the only one.
  for (const auto& [id, c] : codes_) revisions_.try_emplace({id, c.rev}, c);
  r = store_.ForEachWorkerRecord("schedule/", [&](std::string_view, std::string_view v) {
    if (auto s = DecodeSchedule(v)) schedules_[s->id] = std::move(*s);
  });
  if (!r) return r;
  TimeMs now = clock_.NowMs();
  // Uploads that a crash interrupted, before they had a revision.
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(fs::path(options_.data_dir) / "codes", ec))
    if (f.path().extension() == ".tmp") fs::remove(f.path(), ec);
  // Containers and work dirs of runs that Kiln did not see to the end (it
  // died meanwhile): killed and removed before anything runs again.
  for (const auto& d : fs::directory_iterator(fs::path(options_.data_dir) / "task-work", ec)) {
    std::string id = d.path().filename().string();
    runc_.Sweep("kiln-" + id, (d.path() / "run").string());
    RemoveRunDir(d.path());
  }
  std::vector<std::string> cut_off;  // running when Kiln died
  // Records written before payloads had records of their own hold them:
  // each is split in two, in the same write (a crash leaves it whole).
  store::Store::WorkerRecords split;
  size_t split_bytes = 0;
  Result<void> split_written = Ok();
  auto write_split = [&] {
    if (split_written) split_written = store_.PutWorkerRecords(split);
    split.clear();
    split_bytes = 0;
  };
  r = store_.ForEachWorkerRecord("task/", [&](std::string_view, std::string_view v) {
    auto t = DecodeTask(v);
    if (!t) return;
    if (!t->payload.empty()) {
      split_bytes += t->payload.size();
      split.emplace_back(PayloadKey(t->id), std::move(t->payload));
      t->payload.clear();
      split.emplace_back("task/" + t->id, EncodeTask(*t));
      if (split_bytes >= (8 << 20)) write_split();
    }
    next_seq_ = std::max(next_seq_, t->seq + 1);
    // "preparing" is not written (only an older Kiln's progress call wrote
    // it): such a task ran nothing and waits again.
    if (t->state == TaskState::kPreparing) t->state = TaskState::kQueued;
    if (t->state == TaskState::kRunning) {
      t->state = TaskState::kError;
      t->msg = "Kiln stopped while the task ran";
      t->end_time = t->updated_at = now;
      cut_off.push_back(t->id);
    }
    if (t->state == TaskState::kQueued) QueueLocked(*t);
    IndexLocked(tasks_[t->id] = std::move(*t));
  });
  if (!r) return r;
  write_split();
  if (!split_written) return split_written;
  // They failed as any error does: retried while the code allows.
  for (const auto& id : cut_off) RecordEndLocked(tasks_.at(id), now);
  // Containers of this server's tasks left without a work dir (a `runc
  // delete` that failed as a run ended, then the dir went): nothing runs
  // yet, so every one is an orphan. Other servers' on this host are theirs.
  for (const auto& c : runc_.Containers()) {
    constexpr std::string_view kPrefix = "kiln-";
    if (c.rfind(kPrefix, 0) == 0 && tasks_.count(c.substr(kPrefix.size()))) {
      spdlog::warn("container {} of an earlier run is left: removed", c);
      runc_.Sweep(
          c,
          (fs::path(options_.data_dir) / "task-work" / c.substr(kPrefix.size()) / "run").string());
    }
  }
  return Ok();
}

void Service::Start() {
  std::lock_guard lock(mu_);
  stopping_ = false;
  for (int i = 0; i < options_.slots; ++i) slots_.emplace_back([this] { SlotLoop(); });
  if (options_.run_schedules) scheduler_ = std::thread([this] { ScheduleLoop(); });
}

void Service::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& [id, flag] : cancels_) *flag = true;
  }
  cv_.notify_all();
  for (auto& t : slots_) t.join();
  slots_.clear();
  if (scheduler_.joinable()) scheduler_.join();
}

// ---- Codes ----

Result<const Code*> Service::FindCodeLocked(const std::string& project,
                                            const std::string& name_or_id) const {
  // The id first: a code may be named like another code's id, and the
  // clients pass ids.
  auto it = codes_.find(name_or_id);
  if (it == codes_.end() || it->second.project_id != project) {
    auto byname = code_by_name_.find({project, name_or_id});
    it = byname != code_by_name_.end() ? codes_.find(byname->second) : codes_.end();
  }
  if (it == codes_.end() || it->second.project_id != project)
    return Fail(Error::NotFound("Code not found"));
  return &it->second;
}

namespace {

bool HasControlByte(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

// What a code's settings may hold: every revision is kept in memory, and
// its env goes into every task's environment (execve refuses a string
// past 128 KiB).
Result<void> CheckCodeFields(const Code& spec) {
  if (spec.name.empty()) return Fail(Error::InvalidArgument("name is required"));
  if (spec.name.size() > 255 || HasControlByte(spec.name))
    return Fail(Error::InvalidArgument("name must be 1-255 bytes without control bytes"));
  if (spec.command.size() > kMaxCommand)
    return Fail(Error::InvalidArgument("command must be at most 16384 bytes"));
  if (spec.file_name.size() > 1024)
    return Fail(Error::InvalidArgument("file_name must be at most 1024 bytes"));
  size_t env_bytes = 0;
  for (const auto& [k, v] : spec.env_vars) {
    bool name_ok = !k.empty() && k.size() <= 255 &&
                   !std::isdigit(static_cast<unsigned char>(k[0])) &&
                   std::all_of(k.begin(), k.end(),
                               [](unsigned char c) { return std::isalnum(c) || c == '_'; });
    if (!name_ok)
      return Fail(Error::InvalidArgument("env_vars names are letters, digits and _, not " +
                                         std::string(k.size() > 64 ? k.substr(0, 64) + "..." : k)));
    if (v.find('\0') != std::string::npos)  // execve would cut it there
      return Fail(Error::InvalidArgument("env_vars values cannot hold a NUL byte: " + k));
    env_bytes += k.size() + v.size() + 2;
  }
  if (env_bytes > kMaxEnvBytes) return Fail(Error::TooLarge("env_vars exceed 64 KB in all"));
  return Ok();
}

}  // namespace

Result<Code> Service::PutCode(const std::string& project, Code spec, const std::string& zip) {
  if (auto r = CheckCodeFields(spec); !r) return Fail(r.error());
  int64_t unpacked_bytes = 0;
  if (!zip.empty()) {
    auto info = runner::CheckZip(zip, kMaxUnpacked);
    if (!info) return Fail(info.error());
    unpacked_bytes = info->unpacked_bytes;
    if (spec.file_name.empty() && spec.command.empty())
      return Fail(Error::InvalidArgument("a zip code needs file_name (with runtime) or command"));
    if (!spec.file_name.empty() &&
        (spec.file_name.find_first_of("'\"\\$`\n") != std::string::npos ||
         spec.file_name.find("..") != std::string::npos || spec.file_name.front() == '/'))
      return Fail(Error::InvalidArgument("file_name must be a plain path inside the package"));
    if (!spec.file_name.empty()) {
      std::string_view f = spec.file_name;
      if (f.starts_with("./")) f.remove_prefix(2);
      if (!info->members.count(std::string(f)))
        return Fail(Error::InvalidArgument("file_name " + spec.file_name +
                                           " is not a file of the package"));
    }
    spec.checksum = Md5Hex(zip);
    spec.code_size = static_cast<int64_t>(zip.size());
  } else if (spec.image.empty()) {
    return Fail(Error::InvalidArgument(
        "a code needs an image (and a command, or the image's own Entrypoint and Cmd), or a "
        "zip package (the file part) with file_name"));
  }
  for (const auto* name : {&spec.image, &spec.stack, &spec.runtime})
    if (!name->empty() && !runner::IsImageName(*name))
      return Fail(Error::InvalidArgument(
          "image, stack and runtime are names of 1-255 letters, digits and . _ - : / @: " + *name));
  if (spec.network && !options_.allow_host_network)
    return Fail(Error::PermissionDenied(
        "network host is off on this server (kiln serve --allow-host-network turns it on)"));
  if (spec.max_concurrency < 0)
    return Fail(Error::InvalidArgument("max_concurrency must be 0 or more"));
  if (spec.retries < 0 || spec.retries > 10)
    return Fail(Error::InvalidArgument("retries must be between 0 and 10"));
  if (spec.retries_delay < 0 || spec.retries_delay > kMaxRetriesDelay)
    return Fail(Error::InvalidArgument("retries_delay must be between 0 and " +
                                       std::to_string(kMaxRetriesDelay) + " seconds"));
  if (spec.default_priority < 0 || spec.default_priority > 2)
    return Fail(Error::InvalidArgument("default_priority must be 0, 1 or 2"));
  if (spec.config.size() > kMaxPayload) return Fail(Error::TooLarge("config exceeds 64 KB"));
  if (spec.memory_mb < 8 || spec.memory_mb > options_.max_task_memory_mb)
    return Fail(Error::InvalidArgument("memory must be between 8 and " +
                                       std::to_string(options_.max_task_memory_mb) +
                                       " MB on this server (kiln serve --max-task-memory)"));
  if (spec.disk_mb < kMinDiskMb || spec.disk_mb > kMaxDiskMb)
    return Fail(Error::InvalidArgument("disk must be between " + std::to_string(kMinDiskMb) +
                                       " and " + std::to_string(kMaxDiskMb) + " MB"));
  if (unpacked_bytes > (spec.disk_mb << 20))  // unpacked into the task dir on every run
    return Fail(Error::InvalidArgument(
        "the zip archive unpacks to " + std::to_string(unpacked_bytes >> 20) +
        " MB, more than the code's disk limit (disk: " + std::to_string(spec.disk_mb) + " MB)"));

  // The package goes to disk, synced, before the lock; it is renamed into
  // place under the lock once its revision number is known.
  std::string tmp;
  if (!zip.empty()) {
    // A package does not take the space the data dir keeps free (the
    // store's, every project's): uploads in a loop filled the disk to 0.
    int64_t free =
        options_.min_free_disk_bytes > 0 ? runner::AvailableDiskBytes(options_.data_dir) : -1;
    if (free >= 0 && free - static_cast<int64_t>(zip.size()) < options_.min_free_disk_bytes)
      return Fail(
          Error::Unavailable("the data dir's disk has too little free space for this package (" +
                             std::to_string(free >> 20) + " MB free, " +
                             std::to_string(options_.min_free_disk_bytes >> 20) +
                             " MB kept free: kiln serve --task-disk-reserve)"));
    {
      // Before the package is written: an upload past the quota costs no
      // disk write.
      std::lock_guard lock(mu_);
      if (auto room = RoomForPackageLocked(project, spec.name, spec.code_size); !room)
        return Fail(room.error());
    }
    std::error_code ec;
    fs::create_directories(fs::path(options_.data_dir) / "codes", ec);
    tmp = options_.data_dir + "/codes/upload-" + RandomHex(8) + ".tmp";
    if (auto r = WriteSynced(tmp, zip); !r) return Fail(r.error());
  }
  std::lock_guard lock(mu_);
  TimeMs now = clock_.NowMs();
  spec.project_id = project;
  spec.history_id = NewObjectId(now);
  spec.updated_at = now;
  auto it = code_by_name_.find({project, spec.name});
  if (it != code_by_name_.end()) {
    const Code& old = codes_.at(it->second);
    spec.id = old.id;
    spec.rev = old.rev + 1;
    spec.created_at = old.created_at;
    spec.paused = old.paused;
  } else {
    spec.id = NewObjectId(now);
    spec.rev = 1;
    spec.created_at = now;
  }
  std::string path;  // the package's, once it is in place
  if (!tmp.empty()) {
    // Again, now that the package is written: another upload of the
    // project may have come in between.
    if (auto room = RoomForPackageLocked(project, spec.name, spec.code_size); !room) {
      std::error_code ec;
      fs::remove(tmp, ec);
      return Fail(room.error());
    }
    std::error_code ec;
    path = PackagePath(spec.id, spec.rev);
    fs::create_directories(fs::path(path).parent_path(), ec);
    fs::rename(tmp, path, ec);
    if (ec) {
      fs::remove(tmp, ec);
      return Fail(Error::Unavailable("cannot store the code package: " + ec.message()));
    }
  }
  std::string record = EncodeCode(spec);
  // The revision and the code's latest record in one write: both or neither.
  if (auto r = store_.PutWorkerRecords(
          {{RevKey(spec.id, spec.rev), record}, {"code/" + spec.id, record}});
      !r) {
    std::error_code ec;
    if (!path.empty()) fs::remove(path, ec);  // no record names it
    return Fail(r.error());
  }
  code_by_name_[{project, spec.name}] = spec.id;
  codes_[spec.id] = spec;
  revisions_[{spec.id, spec.rev}] = spec;
  PruneRevisionsLocked(spec);
  WakeSlotsLocked();  // a higher max_concurrency may let tasks start
  return spec;
}

std::vector<int64_t> Service::StaleRevisionsLocked(const std::string& id,
                                                   const std::string& project, int64_t rev) const {
  int64_t keep_from = rev - options_.max_code_revisions + 1;
  if (options_.max_code_revisions <= 0 || keep_from <= 1) return {};
  auto from = revisions_.lower_bound({id, 0});
  if (from == revisions_.end() || from->first.first != id || from->first.second >= keep_from)
    return {};
  // Revisions a task still needs: it runs the one it was queued with.
  std::set<int64_t> needed;
  auto need = [&](const std::string& task_id) {
    auto t = tasks_.find(task_id);
    if (t != tasks_.end() && t->second.code_id == id) needed.insert(t->second.code_rev);
  };
  if (auto q = queued_.find(project); q != queued_.end())
    for (const auto& [prio, seq, task_id] : q->second) need(task_id);
  for (const auto& [task_id, cancel] : cancels_) need(task_id);  // preparing or running
  std::vector<int64_t> out;
  for (auto it = from;
       it != revisions_.end() && it->first.first == id && it->first.second < keep_from; ++it)
    if (!needed.count(it->first.second)) out.push_back(it->first.second);
  return out;
}

void Service::PruneRevisionsLocked(const Code& code) {
  std::vector<int64_t> revs = StaleRevisionsLocked(code.id, code.project_id, code.rev);
  if (revs.empty()) return;
  std::vector<std::string> keys;
  for (int64_t rev : revs) keys.push_back(RevKey(code.id, rev));
  // Should the write fail the revisions stay, to be tried at the next upload.
  if (auto r = store_.DeleteWorkerRecords(keys); !r) {
    spdlog::warn("code {}: old revisions not removed: {}", code.id, r.error().message());
    return;
  }
  for (int64_t rev : revs) {
    revisions_.erase({code.id, rev});
    std::error_code ec;
    fs::remove(PackagePath(code.id, rev), ec);
  }
}

Result<void> Service::RoomForPackageLocked(const std::string& project, const std::string& name,
                                           int64_t size) const {
  int64_t quota = options_.max_package_bytes_per_project;
  if (quota <= 0) return Ok();
  // What the project keeps after this upload, which removes the stale
  // revisions of its code.
  int64_t kept = PackageBytesLocked(project) + size;
  if (auto it = code_by_name_.find({project, name}); it != code_by_name_.end()) {
    const Code& code = codes_.at(it->second);
    for (int64_t rev : StaleRevisionsLocked(code.id, project, code.rev + 1))
      kept -= revisions_.at({code.id, rev}).code_size;
  }
  if (kept <= quota) return Ok();
  char text[160];
  std::snprintf(text, sizeof text,
                "the project's code packages would take %.1f MiB, past its quota of %.1f MiB",
                static_cast<double>(kept) / (1 << 20), static_cast<double>(quota) / (1 << 20));
  return Fail(Error::PermissionDenied(
      std::string(text) +
      " (kiln serve --project-package-quota-mb): delete codes it no longer needs"));
}

int64_t Service::PackageBytesLocked(const std::string& project) const {
  int64_t bytes = 0;
  for (auto c = code_by_name_.lower_bound({project, ""});
       c != code_by_name_.end() && c->first.first == project; ++c)
    for (auto r = revisions_.lower_bound({c->second, 0});
         r != revisions_.end() && r->first.first == c->second; ++r)
      bytes += r->second.code_size;
  return bytes;
}

Result<Code> Service::GetCode(const std::string& project, const std::string& name_or_id) const {
  std::lock_guard lock(mu_);
  auto c = FindCodeLocked(project, name_or_id);
  if (!c) return Fail(c.error());
  return **c;
}

std::vector<Code> Service::ListCodes(const std::string& project, int page, int per_page) const {
  std::lock_guard lock(mu_);
  std::vector<Code> all;
  for (auto it = code_by_name_.lower_bound({project, ""});
       it != code_by_name_.end() && it->first.first == project; ++it)
    all.push_back(codes_.at(it->second));
  return Page(std::move(all), page, per_page);
}

Result<void> Service::DeleteCode(const std::string& project, const std::string& id) {
  std::lock_guard lock(mu_);
  auto c = FindCodeLocked(project, id);
  if (!c) return Fail(c.error());
  Code code = **c;
  std::vector<std::string> keys = {"code/" + code.id};
  auto from = revisions_.lower_bound({code.id, 0}), to = from;
  for (; to != revisions_.end() && to->first.first == code.id; ++to)
    keys.push_back(RevKey(code.id, to->first.second));
  if (auto r = store_.DeleteWorkerRecords(keys); !r) return r;
  revisions_.erase(from, to);
  std::error_code ec;
  fs::remove_all(fs::path(options_.data_dir) / "codes" / code.id, ec);
  code_by_name_.erase({project, code.name});
  codes_.erase(code.id);
  if (auto r = CancelQueuedLocked(code.id, "Code deleted"); !r) return Fail(r.error());
  return Ok();
}

Result<std::vector<Code>> Service::Revisions(const std::string& project, const std::string& id,
                                             int page, int per_page) const {
  std::lock_guard lock(mu_);
  auto c = FindCodeLocked(project, id);
  if (!c) return Fail(c.error());
  std::vector<Code> all;
  for (auto it = revisions_.lower_bound({(*c)->id, 0});
       it != revisions_.end() && it->first.first == (*c)->id; ++it)
    all.push_back(it->second);
  std::reverse(all.begin(), all.end());  // newest first
  return Page(std::move(all), page, per_page);
}

Result<std::pair<std::string, std::shared_ptr<const FileRange>>> Service::Download(
    const std::string& project, const std::string& id, int64_t rev) const {
  std::string path, name;
  {
    std::lock_guard lock(mu_);
    auto c = FindCodeLocked(project, id);
    if (!c) return Fail(c.error());
    if (rev <= 0) rev = (*c)->rev;
    auto it = revisions_.find({(*c)->id, rev});
    if (it == revisions_.end()) return Fail(Error::NotFound("Revision not found"));
    if (it->second.code_size == 0)
      return Fail(Error::NotFound("Revision " + std::to_string(rev) + " has no code package"));
    path = PackagePath((*c)->id, rev);
    name = (*c)->name + "_" + std::to_string(rev) + ".zip";
  }
  auto file = FileRange::Open(path);
  if (!file && file.error().code() == ErrorCode::kNotFound)
    return Fail(Error::NotFound("Code package not found"));
  if (!file) {
    spdlog::error("code {} revision {}: {}", id, rev, file.error().message());
    return Fail(Error::Internal("the code package cannot be read"));  // no host paths
  }
  return std::pair{name, std::move(*file)};
}

Result<CodeStats> Service::Stats(const std::string& project, const std::string& id, TimeMs from,
                                 TimeMs to) const {
  std::lock_guard lock(mu_);
  auto c = FindCodeLocked(project, id);
  if (!c) return Fail(c.error());
  CodeStats out{};
  auto index = by_code_name_.find({project, (*c)->name});
  if (index == by_code_name_.end()) return out;
  for (const auto& [created_at, seq, t] : index->second)
    if (t->code_id == (*c)->id && created_at >= from && created_at <= to)
      ++out[static_cast<size_t>(t->state)];
  return out;
}

Result<void> Service::SetPaused(const std::string& project, const std::string& id, bool paused) {
  std::lock_guard lock(mu_);
  auto c = FindCodeLocked(project, id);
  if (!c) return Fail(c.error());
  Code& code = codes_.at((*c)->id);
  code.paused = paused;
  if (auto r = store_.PutWorkerRecord("code/" + code.id, EncodeCode(code)); !r) return r;
  WakeSlotsLocked();
  return Ok();
}

Result<int64_t> Service::CancelAll(const std::string& project, const std::string& id) {
  std::lock_guard lock(mu_);
  auto c = FindCodeLocked(project, id);
  if (!c) return Fail(c.error());
  return CancelQueuedLocked((*c)->id, "Cancelled");
}

std::vector<std::string> Service::Stacks() {
  std::set<std::string> names = {"busybox"};
  std::lock_guard lock(images_mu_);
  for (const auto& img : images_.List())
    for (const auto& n : img.names) names.insert(n);
  return {names.begin(), names.end()};
}

// ---- Tasks ----

Result<Task> Service::MakeTaskLocked(const std::string& project, const NewTask& n, TimeMs now) {
  auto byname = code_by_name_.find({project, n.code_name});
  if (byname == code_by_name_.end()) return Fail(Error::NotFound("Code not found: " + n.code_name));
  const Code& c = codes_.at(byname->second);
  int priority = n.priority.value_or(c.default_priority);
  if (priority < 0 || priority > 2)
    return Fail(Error::InvalidArgument("priority must be 0, 1 or 2"));
  if (n.timeout < 1 || n.timeout > 3600)
    return Fail(Error::InvalidArgument("timeout must be between 1 and 3600"));
  if (n.delay < 0 || n.delay > 604800)
    return Fail(Error::InvalidArgument("delay must be between 0 and 604800"));
  if (n.payload.size() > kMaxPayload) return Fail(Error::TooLarge("payload exceeds 64 KB"));
  if (auto r = CheckTags(n.label, n.cluster); !r) return Fail(r.error());
  Task t;
  t.id = NewObjectId(now);
  t.project_id = project;
  t.code_id = c.id;
  t.code_history_id = c.history_id;
  t.code_name = c.name;
  t.code_rev = c.rev;
  t.payload = n.payload;
  t.priority = priority;
  t.timeout = n.timeout;
  t.run_after = now + n.delay * 1000;
  t.label = n.label;
  t.cluster = n.cluster.empty() ? "default" : n.cluster;
  t.sync = n.sync;
  t.created_at = t.updated_at = now;
  return t;
}

Result<void> Service::EnqueueLocked(std::vector<Task> tasks, store::Store::WorkerRecords with) {
  for (Task& t : tasks) {
    t.seq = next_seq_++;
    if (!t.payload.empty()) with.emplace_back(PayloadKey(t.id), std::move(t.payload));
    t.payload.clear();
    with.emplace_back("task/" + t.id, EncodeTask(t));
  }
  if (auto r = store_.PutWorkerRecords(with); !r) return r;  // nothing queued
  for (Task& t : tasks) {
    QueueLocked(t);
    std::string id = t.id;
    IndexLocked(tasks_[id] = std::move(t));
  }
  WakeSlotsLocked();
  return Ok();
}

Result<std::vector<std::string>> Service::QueueTasks(const std::string& project,
                                                     const std::vector<NewTask>& tasks) {
  std::lock_guard lock(mu_);
  std::vector<Task> made;
  TimeMs now = clock_.NowMs();
  for (const auto& n : tasks) {
    auto t = MakeTaskLocked(project, n, now);
    if (!t) return Fail(t.error());
    made.push_back(std::move(*t));
  }
  if (auto r = RoomToQueueLocked(project, made.size()); !r) return Fail(r.error());
  std::vector<std::string> ids;
  for (const auto& t : made) ids.push_back(t.id);
  if (auto r = EnqueueLocked(std::move(made)); !r) return Fail(r.error());
  return ids;
}

Result<void> Service::RoomToQueueLocked(const std::string& project, size_t more) const {
  auto q = queued_.find(project);
  size_t queued = q == queued_.end() ? 0 : q->second.size();
  if (queued + more <= options_.max_queued_tasks_per_project) return Ok();
  return Fail(Error::PermissionDenied("a project has at most " +
                                      std::to_string(options_.max_queued_tasks_per_project) +
                                      " queued tasks (" + std::to_string(queued) + " now)"));
}

void Service::ReadProgressLocked(Task& t) const {
  if (t.state != TaskState::kRunning) return;
  std::string path = TaskDir(t.id) + "/" + kProgressFile;
  if (t.progress_set_at > 0) {  // the API's progress stands until the file is written again
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) return;
    TimeMs written = static_cast<TimeMs>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
    if (written <= t.progress_set_at) return;
  }
  std::string text = ReadTaskFile(path, kMaxProgressFile);
  if (text.empty()) return;
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
  if (d.HasParseError() || !d.IsObject()) return;
  if (d.HasMember("percent") && d["percent"].IsNumber())  // clamped before the cast: 1e300 too
    t.percent = static_cast<int>(std::clamp(d["percent"].GetDouble(), 0.0, 100.0));
  if (d.HasMember("msg") && d["msg"].IsString()) t.msg = d["msg"].GetString();
}

Result<Task> Service::FindTask(const std::string& project, const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end() || it->second.project_id != project)
    return Fail(Error::NotFound("Task not found"));
  Task t = it->second;
  ReadProgressLocked(t);
  return t;
}

Result<Task> Service::GetTask(const std::string& project, const std::string& id) const {
  auto t = FindTask(project, id);
  if (!t) return t;
  return WithPayload(std::move(*t));
}

Result<Task> Service::Watch(const std::string& project, const std::string& id, Wake wake) {
  Task t;
  {
    std::lock_guard lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end() || it->second.project_id != project)
      return Fail(Error::NotFound("Task not found"));
    t = it->second;
    ReadProgressLocked(t);
    // Once the server is shutting down nobody waits: a wake kept now would
    // outlive the io context it posts to.
    if (!Final(t.state)) {
      if (watch_closed_)
        (*wake)();
      else
        watchers_.emplace(id, std::move(wake));
    }
  }
  auto filled = WithPayload(std::move(t));
  if (!filled) Unwatch(id, wake);
  return filled;
}

void Service::Unwatch(const std::string& id, const Wake& wake) {
  std::lock_guard lock(mu_);
  auto [from, to] = watchers_.equal_range(id);
  for (auto it = from; it != to; ++it)
    if (it->second == wake) {
      watchers_.erase(it);
      return;
    }
}

void Service::WakeWatchers() {
  std::lock_guard lock(mu_);
  watch_closed_ = true;
  for (auto& [id, wake] : watchers_) (*wake)();
  watchers_.clear();
}

Result<std::vector<Task>> Service::ListTasks(const std::string& project,
                                             const TaskFilter& f) const {
  std::vector<Task> out;
  {
    std::lock_guard lock(mu_);
    out = ListLocked(project, f);
  }
  std::vector<Task> filled;
  filled.reserve(out.size());
  for (Task& t : out) {
    auto w = WithPayload(std::move(t));
    if (w)
      filled.push_back(std::move(*w));
    else if (w.error().code() != ErrorCode::kNotFound)  // else expired meanwhile
      return Fail(w.error());
  }
  return filled;
}

void Service::IndexLocked(const Task& t) {
  TaskOrder key{t.created_at, t.seq, &t};
  by_project_[t.project_id].insert(key);
  by_code_name_[{t.project_id, t.code_name}].insert(key);
}

void Service::UnindexLocked(const Task& t) {
  TaskOrder key{t.created_at, t.seq, &t};
  if (auto p = by_project_.find(t.project_id); p != by_project_.end()) {
    p->second.erase(key);
    if (p->second.empty()) by_project_.erase(p);
  }
  if (auto c = by_code_name_.find({t.project_id, t.code_name}); c != by_code_name_.end()) {
    c->second.erase(key);
    if (c->second.empty()) by_code_name_.erase(c);
  }
}

std::vector<Task> Service::ListLocked(const std::string& project, const TaskFilter& f) const {
  const TaskIndex* index = nullptr;
  if (f.code_name.empty()) {
    if (auto p = by_project_.find(project); p != by_project_.end()) index = &p->second;
  } else if (auto c = by_code_name_.find({project, f.code_name}); c != by_code_name_.end()) {
    index = &c->second;
  }
  std::vector<Task> out;
  if (!index || f.per_page <= 0) return out;
  // Newest first; the sequence breaks ties within a millisecond. The walk
  // stops once the page is full.
  size_t skip = static_cast<size_t>(std::max(f.page, 0)) * static_cast<size_t>(f.per_page);
  for (auto it = index->rbegin(); it != index->rend(); ++it) {
    const Task& t = *std::get<2>(*it);
    if (f.to && t.created_at > f.to) continue;
    if (f.from && t.created_at < f.from) break;
    if (!f.label.empty() && t.label != f.label) continue;
    if (!f.cluster.empty() && t.cluster != f.cluster) continue;
    if (!f.states.empty() && !f.states.count(t.state)) continue;
    if (skip > 0) {
      --skip;
      continue;
    }
    out.push_back(t);
    ReadProgressLocked(out.back());
    if (out.size() == static_cast<size_t>(f.per_page)) break;
  }
  return out;
}

Result<void> Service::Cancel(const std::string& project, const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end() || it->second.project_id != project)
    return Fail(Error::NotFound("Task not found"));
  Task& t = it->second;
  if (Final(t.state)) return Ok();
  if (t.state == TaskState::kQueued) {
    UnqueueLocked(t);
    EndQueuedLocked(t, "Cancelled");
    return Save(t);
  }
  if (auto c = cancels_.find(id); c != cancels_.end()) *c->second = true;  // the slot finishes it
  return Ok();
}

Result<std::string> Service::Retry(const std::string& project, const std::string& id,
                                   int64_t delay) {
  if (delay < 0 || delay > 604800)
    return Fail(Error::InvalidArgument("delay must be between 0 and 604800"));
  std::lock_guard lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end() || it->second.project_id != project)
    return Fail(Error::NotFound("Task not found"));
  const Task& old = it->second;
  if (!Final(old.state))
    return Fail(Error::InvalidArgument("Task is " + std::string(StateName(old.state)) +
                                       ": only a finished task can be retried"));
  if (!codes_.count(old.code_id)) return Fail(Error::NotFound("Code not found: " + old.code_name));
  if (!revisions_.count({old.code_id, old.code_rev}))
    return Fail(Error::NotFound("Revision " + std::to_string(old.code_rev) + " of code " +
                                old.code_name + " is no longer kept (--max-code-revisions)"));
  if (auto r = RoomToQueueLocked(project, 1); !r) return Fail(r.error());
  auto payload = PayloadOf(old.id);
  if (!payload) return Fail(payload.error());
  TimeMs now = clock_.NowMs();
  Task t;
  t.id = NewObjectId(now);
  for (auto f : {&Task::project_id, &Task::code_id, &Task::code_history_id, &Task::code_name,
                 &Task::label, &Task::cluster, &Task::schedule_id})
    t.*f = old.*f;
  t.payload = std::move(*payload);
  t.code_rev = old.code_rev;
  t.priority = old.priority;
  t.timeout = old.timeout;
  t.original_task_id = old.original_task_id.empty() ? old.id : old.original_task_id;
  t.retry_count = old.retry_count + 1;
  t.created_at = t.updated_at = now;
  t.run_after = now + delay * 1000;
  std::string new_id = t.id;
  if (auto r = EnqueueLocked({std::move(t)}); !r) return Fail(r.error());
  return new_id;
}

Result<void> Service::SetProgress(const std::string& project, const std::string& id,
                                  std::optional<int> percent, std::optional<std::string> msg) {
  if (percent && (*percent < 0 || *percent > 100))
    return Fail(Error::InvalidArgument("percent must be between 0 and 100"));
  if (msg && msg->size() > kMaxProgressMsg)
    return Fail(Error::TooLarge("msg must be at most 4096 bytes"));
  std::lock_guard lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end() || it->second.project_id != project)
    return Fail(Error::NotFound("Task not found"));
  Task& t = it->second;
  // A finished task's msg says how it ended ("Exit code 3: ..."): kept.
  if (Final(t.state))
    return Fail(Error::InvalidArgument("Task is " + std::string(StateName(t.state)) +
                                       ": progress is for a task that has not ended"));
  if (percent) t.percent = *percent;  // what is not given stays
  if (msg) t.msg = std::move(*msg);
  t.updated_at = t.progress_set_at = clock_.NowMs();
  if (t.state != TaskState::kPreparing) return Save(t);
  // "preparing" is never written (a task lost while preparing is queued
  // again after a restart): the record says queued, with the progress.
  Task recorded = t;
  recorded.state = TaskState::kQueued;
  return Save(recorded);
}

Result<std::shared_ptr<const FileRange>> Service::Log(const std::string& project,
                                                      const std::string& id,
                                                      uint64_t offset) const {
  auto t = FindTask(project, id);
  if (!t) return Fail(t.error());
  auto log = FileRange::Open(LogPath(id), offset);
  if (!log && log.error().code() == ErrorCode::kNotFound) {
    // A task that ended before its container ran (cancelled while queued,
    // a code that could not be prepared) has an empty log: clients poll
    // the log until it is there.
    if (Final(t->state)) return FileRange::Empty();
    return Fail(Error::NotFound("Log not found"));
  }
  if (!log) {
    spdlog::error("task {}: {}", id, log.error().message());
    return Fail(Error::Internal("the task's log cannot be read"));  // no host paths
  }
  return log;
}

// ---- Schedules ----

Result<Schedule> Service::CheckScheduleLocked(const std::string& project, Schedule s, TimeMs now) {
  if (s.code_name.empty()) return Fail(Error::InvalidArgument("code_name is required"));
  if (s.payload.empty())
    return Fail(Error::InvalidArgument("payload is required (an empty payload: \"{}\")"));
  if (s.payload.size() > kMaxPayload) return Fail(Error::TooLarge("payload exceeds 64 KB"));
  if (!code_by_name_.count({project, s.code_name}))
    return Fail(Error::NotFound("Code not found: " + s.code_name));
  if (s.priority && (*s.priority < 0 || *s.priority > 2))
    return Fail(Error::InvalidArgument("priority must be 0, 1 or 2"));
  if (s.timeout < 1 || s.timeout > 3600)
    return Fail(Error::InvalidArgument("timeout must be between 1 and 3600"));
  if (s.max_concurrency < -1)
    return Fail(Error::InvalidArgument("max_concurrency must be -1 (no limit) or more"));
  if (s.task_delay < 0 || s.task_delay > 604800)
    return Fail(Error::InvalidArgument("delay must be between 0 and 604800"));
  if (auto r = CheckTags(s.label, s.cluster); !r) return Fail(r.error());
  if (s.name.size() > kMaxTagBytes)
    return Fail(
        Error::InvalidArgument("name is at most " + std::to_string(kMaxTagBytes) + " bytes"));
  if (s.start_at == 0) s.start_at = now;
  if (auto r = CheckTiming(s); !r) return Fail(r.error());
  s.project_id = project;
  s.updated_at = now;
  if (s.status == "scheduled") s.next_start = NextRunAfterChange(s, now);
  if (s.run_count == 0 && s.next_start == 0)  // a cron with no match (before end_at)
    return Fail(Error::InvalidArgument("the schedule would never run: " + s.msg));
  if (s.next_start >= kYear10000)  // not a time RFC 3339 (and Go's clients) can read
    return Fail(Error::InvalidArgument("the schedule's next run would be after the year 9999"));
  return s;
}

size_t Service::ActiveSchedulesLocked(const std::string& project) const {
  size_t n = 0;
  for (const auto& [id, s] : schedules_)
    if (s.project_id == project && s.status == "scheduled") ++n;
  return n;
}

Result<std::vector<std::string>> Service::CreateSchedules(const std::string& project,
                                                          std::vector<Schedule> specs) {
  std::lock_guard lock(mu_);
  TimeMs now = clock_.NowMs();
  if (ActiveSchedulesLocked(project) + specs.size() > kMaxActiveSchedules)
    return Fail(TooManySchedules());
  std::vector<Schedule> made;
  for (auto& spec : specs) {
    spec.id = NewObjectId(now);
    spec.created_at = now;
    spec.status = "scheduled";
    spec.run_count = 0;
    auto s = CheckScheduleLocked(project, std::move(spec), now);
    if (!s) return Fail(s.error());
    made.push_back(std::move(*s));
  }
  store::Store::WorkerRecords records;  // all or none
  for (const auto& s : made) records.push_back({"schedule/" + s.id, EncodeSchedule(s)});
  if (auto r = store_.PutWorkerRecords(records); !r) return Fail(r.error());
  std::vector<std::string> ids;
  for (auto& s : made) {
    ids.push_back(s.id);
    schedules_[s.id] = std::move(s);
  }
  return ids;
}

Result<Schedule> Service::GetSchedule(const std::string& project, const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = schedules_.find(id);
  if (it == schedules_.end() || it->second.project_id != project)
    return Fail(Error::NotFound("Schedule not found"));
  return it->second;
}

std::vector<Schedule> Service::ListSchedules(const std::string& project, int page,
                                             int per_page) const {
  std::lock_guard lock(mu_);
  std::vector<Schedule> all;
  for (const auto& [id, s] : schedules_)
    if (s.project_id == project) all.push_back(s);
  std::sort(all.begin(), all.end(),
            [](const Schedule& a, const Schedule& b) { return a.id > b.id; });  // newest first
  return Page(std::move(all), page, per_page);
}

Result<std::string> Service::CancelSchedule(const std::string& project, const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = schedules_.find(id);
  if (it == schedules_.end() || it->second.project_id != project)
    return Fail(Error::NotFound("Schedule not found"));
  if (it->second.status != "scheduled") return it->second.status;
  Schedule s = it->second;  // changed once it is written
  s.status = "cancelled";
  s.msg = "Cancelled";
  s.next_start = 0;
  s.updated_at = clock_.NowMs();
  if (auto r = store_.PutWorkerRecord("schedule/" + s.id, EncodeSchedule(s)); !r)
    return Fail(r.error());
  it->second = std::move(s);
  return std::string("scheduled");
}

Result<Schedule> Service::UpdateSchedule(const std::string& project, Schedule s) {
  std::lock_guard lock(mu_);
  auto it = schedules_.find(s.id);
  if (it == schedules_.end() || it->second.project_id != project)
    return Fail(Error::NotFound("Schedule not found"));
  const Schedule& old = it->second;
  if (old.status == "cancelled")
    return Fail(Error::InvalidArgument("a cancelled schedule cannot be changed"));
  // A completed one that runs again counts against the limit again.
  if (old.status != "scheduled" && ActiveSchedulesLocked(project) >= kMaxActiveSchedules)
    return Fail(TooManySchedules());
  // What the schedule did so far stays; a completed one may run again.
  s.run_count = old.run_count;
  s.error_count = old.error_count;
  s.last_run_time = old.last_run_time;
  s.created_at = old.created_at;
  s.status = "scheduled";
  s.msg.clear();
  auto checked = CheckScheduleLocked(project, std::move(s), clock_.NowMs());
  if (!checked) return Fail(checked.error());
  if (auto r = store_.PutWorkerRecord("schedule/" + checked->id, EncodeSchedule(*checked)); !r)
    return Fail(r.error());
  schedules_[checked->id] = *checked;
  return *checked;
}

void Service::RunDueSchedules() {
  std::lock_guard lock(mu_);
  TimeMs now = clock_.NowMs();
  for (auto& [id, s] : schedules_) {
    if (s.status != "scheduled" || s.next_start == 0 || s.next_start > now) continue;
    // A paused code holds its schedules too: the run waits, it is not lost.
    auto byname = code_by_name_.find({s.project_id, s.code_name});
    if (byname != code_by_name_.end() && codes_.at(byname->second).paused) continue;
    if (EndedBeforeRun(s, now)) {
      s.updated_at = now;
      if (auto r = store_.PutWorkerRecord("schedule/" + s.id, EncodeSchedule(s)); !r)
        spdlog::error("schedule {}: cannot record its end: {}", s.id, r.error().message());
      continue;
    }
    NewTask n;
    n.code_name = s.code_name;
    n.payload = s.payload;
    n.priority = s.priority;
    n.timeout = s.timeout;
    n.delay = s.task_delay;
    n.label = s.label;
    n.cluster = s.cluster;
    // The run as it will stand once done: written in the same write as its
    // task, so that a crash or a failed write neither runs it twice (task
    // written, schedule not) nor counts a run that queued nothing.
    Schedule ran = s;
    ++ran.run_count;
    ran.last_run_time = now;
    ran.next_start = NextRun(ran, ran.next_start, now);
    ran.updated_at = now;
    auto t = MakeTaskLocked(s.project_id, n, now);
    if (!t) {  // a run that cannot queue its task (the code is gone) counts as an error
      ++ran.error_count;
      ran.msg = t.error().message();
      if (auto r = store_.PutWorkerRecord("schedule/" + s.id, EncodeSchedule(ran)); !r) {
        spdlog::error("schedule {}: cannot record its run: {}", s.id, r.error().message());
        continue;  // tried again at the next tick
      }
      s = std::move(ran);
      continue;
    }
    t->schedule_id = s.id;
    if (auto r = EnqueueLocked({std::move(*t)}, {{"schedule/" + s.id, EncodeSchedule(ran)}}); !r) {
      spdlog::error("schedule {}: cannot queue its task: {}", s.id, r.error().message());
      continue;  // nothing written: the run is still due, tried again at the next tick
    }
    s = std::move(ran);
  }
}

size_t Service::ExpireTasks() {
  std::vector<std::string> gone, gone_schedules;
  if (options_.task_retention.count() <= 0) return 0;  // kept for ever
  {
    std::lock_guard lock(mu_);
    TimeMs cutoff = clock_.NowMs() - options_.task_retention.count();
    for (auto it = tasks_.begin(); it != tasks_.end();) {
      if (!Final(it->second.state) || it->second.end_time > cutoff) {
        ++it;
        continue;
      }
      gone.push_back(it->first);
      UnindexLocked(it->second);
      it = tasks_.erase(it);
    }
    // Finished schedules (complete, cancelled) go after the same time: they
    // were kept in memory and walked by every tick forever.
    for (auto it = schedules_.begin(); it != schedules_.end();) {
      if (it->second.status == "scheduled" || it->second.updated_at > cutoff) {
        ++it;
        continue;
      }
      gone_schedules.push_back(it->first);
      it = schedules_.erase(it);
    }
  }
  // One write for all of them, outside the lock (a task that is gone from
  // memory is not written again). A failed write leaves the records for the
  // next restart to load and expire.
  std::vector<std::string> keys;
  keys.reserve(2 * gone.size() + gone_schedules.size());
  for (const auto& id : gone) {
    keys.push_back("task/" + id);
    keys.push_back(PayloadKey(id));
  }
  for (const auto& id : gone_schedules) keys.push_back("schedule/" + id);
  store_.DeleteWorkerRecords(keys);
  std::error_code ec;
  for (const auto& id : gone) fs::remove(LogPath(id), ec);
  return gone.size();
}

void Service::ScheduleLoop() {
  NameThisThread("kiln-schedule");
  std::unique_lock lock(mu_);
  auto next_expiry = std::chrono::steady_clock::now();
  while (!stopping_) {
    lock.unlock();
    RunDueSchedules();
    if (std::chrono::steady_clock::now() >= next_expiry) {
      ExpireTasks();
      next_expiry = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    }
    lock.lock();
    cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stopping_; });
  }
}

// ---- Running ----

void Service::QueueLocked(const Task& t) {
  queued_[t.project_id].insert({-t.priority, t.seq, t.id});
  ++wake_generation_;
}

void Service::WakeSlotsLocked() {
  ++wake_generation_;
  cv_.notify_all();
}

void Service::UnqueueLocked(const Task& t) {
  auto q = queued_.find(t.project_id);
  if (q == queued_.end()) return;
  q->second.erase({-t.priority, t.seq, t.id});
  if (q->second.empty()) queued_.erase(q);
}

int Service::RunningLocked(const std::string& project) const {
  auto r = running_by_project_.find(project);
  return r == running_by_project_.end() ? 0 : r->second;
}

std::string Service::PickLocked(TimeMs now) {
  // Fair between projects: the first runnable task (by priority, then age)
  // of the project that runs the fewest tasks now; among projects that run
  // as many, the one whose last start is oldest (round robin), then the
  // higher priority and the older task. A project at
  // max_running_per_project waits.
  const QueuedTask* best = nullptr;
  int best_running = 0;
  uint64_t best_turn = 0;
  for (const auto& [project, queue] : queued_) {
    int running = RunningLocked(project);
    auto last = last_start_.find(project);
    uint64_t turn = last == last_start_.end() ? 0 : last->second;
    if (best && std::tie(running, turn) > std::tie(best_running, best_turn)) continue;
    if (options_.max_running_per_project > 0 && running >= options_.max_running_per_project)
      continue;
    if (auto n = nothing_runnable_.find(project); n != nothing_runnable_.end()) {
      if (n->second.generation == wake_generation_ && now < n->second.until) continue;
      nothing_runnable_.erase(n);
    }
    bool found = false;
    TimeMs first_due = std::numeric_limits<TimeMs>::max();
    for (const auto& key : queue) {
      const Task& t = tasks_.at(std::get<2>(key));
      if (t.run_after > now) {
        first_due = std::min(first_due, t.run_after);
        continue;
      }
      auto c = codes_.find(t.code_id);
      if (c != codes_.end() && c->second.paused) continue;
      if (c != codes_.end() && c->second.max_concurrency > 0 &&
          running_by_code_[t.code_id] >= c->second.max_concurrency)
        continue;
      if (!best || std::tie(running, turn, key) < std::tie(best_running, best_turn, *best)) {
        best = &key;
        best_running = running;
        best_turn = turn;
      }
      found = true;
      break;  // the project's first runnable task
    }
    if (!found) nothing_runnable_[project] = {wake_generation_, first_due};
  }
  if (!best) return "";
  std::string picked = std::get<2>(*best);
  // Taken under the lock, so that a cancel from now on reaches the slot.
  // Not written: a task that Kiln loses while preparing ran nothing and
  // is queued again after a restart. "running" is written before the
  // container starts.
  Task& live = tasks_.at(picked);
  UnqueueLocked(live);
  live.state = TaskState::kPreparing;
  live.updated_at = now;
  ++running_by_code_[live.code_id];
  ++running_by_project_[live.project_id];
  last_start_[live.project_id] = ++starts_;
  cancels_[picked] = std::make_shared<std::atomic<bool>>(false);
  return picked;
}

void Service::SlotLoop() {
  NameThisThread("kiln-slot");
  std::unique_lock lock(mu_);
  while (!stopping_) {
    std::string id = PickLocked(clock_.NowMs());
    if (id.empty()) {
      cv_.wait_for(lock, std::chrono::milliseconds(200));  // delays come due
      continue;
    }
    lock.unlock();
    RunTask(id);
    lock.lock();
  }
}

void Service::FinishLocked(Task& t, TaskState state, std::string msg, int exit_code) {
  TimeMs now = clock_.NowMs();
  ReadProgressLocked(t);
  t.state = state;
  if (!msg.empty()) t.msg = std::move(msg);  // else the last progress msg stays
  t.exit_code = exit_code;
  t.end_time = t.updated_at = now;
  std::error_code ec;
  auto size = fs::file_size(LogPath(t.id), ec);
  t.log_size = ec ? 0 : static_cast<int64_t>(size);
  --running_by_code_[t.code_id];
  --running_by_project_[t.project_id];
  cancels_.erase(t.id);
  RecordEndLocked(t, now);
  WakeWatchersLocked(t.id);
}

void Service::RecordEndLocked(const Task& t, TimeMs now) {
  std::optional<Task> retry;
  if (t.state == TaskState::kError || t.state == TaskState::kTimeout) retry = RetryOfLocked(t, now);
  std::vector<const Task*> write{&t};
  store::Store::WorkerRecords with;
  if (retry) {
    if (auto p = PayloadOf(t.id); !p) {
      // The end is recorded all the same; the retry would run without it.
      spdlog::error("task {}: not retried: {}", t.id, p.error().message());
      retry.reset();
    } else {
      retry->seq = next_seq_++;
      write.push_back(&*retry);
      if (!p->empty()) with.emplace_back(PayloadKey(retry->id), std::move(*p));
    }
  }
  if (auto r = SaveAll(write, std::move(with)); !r) {
    // The store still has the task queued or running: a restart ends it
    // (and retries it) as one cut off by a crash.
    spdlog::error("task {}: cannot record it as {}{}: {}", t.id, StateName(t.state),
                  retry ? " with its retry" : "", r.error().message());
    return;
  }
  if (!retry) return;
  QueueLocked(*retry);
  std::string id = retry->id;
  IndexLocked(tasks_[id] = std::move(*retry));
  WakeSlotsLocked();
}

// A failed task runs again, as a new task, while the code allows it.
std::optional<Task> Service::RetryOfLocked(const Task& t, TimeMs now) {
  auto c = codes_.find(t.code_id);
  if (c == codes_.end() || t.retry_count >= c->second.retries) return std::nullopt;
  Task r = t;
  r.id = NewObjectId(now);
  r.original_task_id = t.original_task_id.empty() ? t.id : t.original_task_id;
  r.retry_count = t.retry_count + 1;
  r.state = TaskState::kQueued;
  r.msg.clear();
  r.percent = 0;
  r.exit_code = -1;
  r.log_size = 0;
  r.start_time = r.end_time = 0;
  r.created_at = r.updated_at = now;
  r.run_after = now + c->second.retries_delay * 1000;
  return r;
}

void Service::RunTask(const std::string& id) {
  Task t;
  Code code;
  std::shared_ptr<std::atomic<bool>> cancel;
  {
    std::lock_guard lock(mu_);
    t = tasks_.at(id);
    auto rev = revisions_.find({t.code_id, t.code_rev});
    if (rev != revisions_.end()) code = rev->second;
    cancel = cancels_.at(id);
  }
  auto finish = [&](TaskState state, std::string msg, int exit_code) {
    std::lock_guard lock(mu_);
    FinishLocked(tasks_.at(id), state, std::move(msg), exit_code);
    WakeSlotsLocked();
  };
  // A cancel that comes while the task is prepared ends it before its
  // container starts, and wins over a failure to prepare it: a cancelled
  // task is not retried. Kiln's stop puts it back in the queue instead: it
  // ran nothing, and runs after the restart.
  auto cancelled_before_start = [&] {
    if (!cancel->load()) return false;
    std::lock_guard lock(mu_);
    if (!stopping_) {
      FinishLocked(tasks_.at(id), TaskState::kCancelled, "Cancelled", -1);
      WakeSlotsLocked();
      return true;
    }
    Task& live = tasks_.at(id);
    live.state = TaskState::kQueued;
    live.updated_at = clock_.NowMs();
    --running_by_code_[live.code_id];
    --running_by_project_[live.project_id];
    cancels_.erase(id);
    QueueLocked(live);
    SaveOrLog(live);
    return true;
  };
  if (cancelled_before_start()) return;
  if (code.id.empty()) return finish(TaskState::kError, "Code revision not found", -1);
  if (code.memory_mb > options_.max_task_memory_mb)  // uploaded to a server that allowed it
    return finish(TaskState::kError,
                  "The code asks for " + std::to_string(code.memory_mb) +
                      " MB of memory; this server allows at most " +
                      std::to_string(options_.max_task_memory_mb) +
                      " MB (kiln serve --max-task-memory)",
                  -1);

  if (auto why = runc_.Unavailable(); !why.empty()) return finish(TaskState::kError, why, -1);
  if (code.network && !options_.allow_host_network)  // uploaded while it was allowed
    return finish(TaskState::kError,
                  "network host is off on this server (kiln serve --allow-host-network)", -1);

  Result<runner::ImageInfo> image = Fail(Error::Internal("no image"));
  std::string image_name = ImageOf(code);
  {
    std::lock_guard lock(images_mu_);
    image = image_name == "busybox" ? images_.Busybox() : images_.Find(image_name);
  }
  if (!image) {
    if (cancelled_before_start()) return;
    std::string msg = image.error().message();
    if (code.zip() && code.stack.empty() && code.image.empty())
      msg = "No stack for runtime " + code.runtime + ": build one with `kiln stack build " +
            image_name + " --packages ...` or give the code a stack";
    return finish(TaskState::kError, msg, -1);
  }
  // Held until the container is gone: `kiln image rm` waits for that.
  auto lease = images_.Lease(*image);
  if (!lease) {
    if (cancelled_before_start()) return;
    return finish(TaskState::kError, lease.error().message(), -1);
  }

  std::error_code ec;
  fs::path work = fs::path(options_.data_dir) / "task-work" / id;
  fs::path task_dir = TaskDir(id);
  fs::create_directories(task_dir, ec);
  fs::create_directories(fs::path(options_.data_dir) / "task-logs", ec);
  const std::string in = runner::kTaskDirInContainer;
  if (code.zip()) {
    if (auto r = runner::ExtractZip(PackagePath(code.id, code.rev), task_dir.string(),
                                    std::min(code.disk_mb << 20, kMaxUnpacked));
        !r) {
      RemoveRunDir(work);
      if (cancelled_before_start()) return;
      return finish(TaskState::kError, "Cannot unpack the code package: " + r.error().message(),
                    -1);
    }
  }
  auto payload = PayloadOf(id);
  if (!payload) {
    RemoveRunDir(work);
    if (cancelled_before_start()) return;
    return finish(TaskState::kError, payload.error().message(), -1);
  }
  for (auto [file, bytes] :
       {std::pair{"payload.json", &*payload}, std::pair{"config.json", &code.config}}) {
    if (auto w = WriteTaskFile((task_dir / file).string(), *bytes); !w) {
      RemoveRunDir(work);
      if (cancelled_before_start()) return;
      return finish(TaskState::kError, w.error().message(), -1);
    }
  }
  runner::ContainerSpec spec;
  if (!code.command.empty() || code.zip()) {
    spec.args = {"/bin/sh", "-c", code.command.empty() ? RuntimeCommand(code) : code.command};
  } else {  // an image code without a command: the image's Entrypoint and Cmd, as docker run
    spec.args = image->entrypoint;
    spec.args.insert(spec.args.end(), image->cmd.begin(), image->cmd.end());
    if (spec.args.empty()) {
      RemoveRunDir(work);
      if (cancelled_before_start()) return;
      return finish(
          TaskState::kError,
          "The image " + image_name + " has no Entrypoint or Cmd: give the code a command", -1);
    }
  }
  spec.task_dir = task_dir.string();
  spec.memory_bytes = code.memory_mb << 20;
  spec.max_file_bytes = code.disk_mb << 20;
  spec.network = code.network;
  // The image's own environment first (its PATH, say); Kiln's and the
  // code's after it win over it.
  spec.env = image->env;
  spec.env.insert(spec.env.end(), {{"TASK_ID", t.id},
                                   {"TASK_DIR", in},
                                   {"PAYLOAD_FILE", in + "/payload.json"},
                                   {"CONFIG_FILE", in + "/config.json"},
                                   {"PROGRESS_FILE", in + "/" + kProgressFile},
                                   {"CODE_NAME", code.name}});
  if (!t.schedule_id.empty()) spec.env.emplace_back("SCHEDULE_ID", t.schedule_id);
  for (const auto& e : code.env_vars) spec.env.push_back(e);

  if (cancelled_before_start()) {
    RemoveRunDir(work);
    return;
  }
  Result<void> started = Ok();
  {
    std::lock_guard lock(mu_);
    Task& live = tasks_.at(id);
    live.state = TaskState::kRunning;
    live.start_time = live.updated_at = clock_.NowMs();
    started = Save(live);
  }
  if (!started) {
    // Not run: the store still says queued, so a restart would run it
    // again, with this run unrecorded.
    RemoveRunDir(work);
    return finish(TaskState::kError,
                  "Kiln could not record the task's start: " + started.error().message(), -1);
  }
  // The task's end is recorded as soon as the container exits; the overlay
  // and work dirs go after that, before the slot takes the next task.
  bool reported = false;
  auto report = [&](const runner::RunResult& r) {
    reported = true;
    {
      // The last progress the task wrote, before its directory goes.
      std::lock_guard lock(mu_);
      ReadProgressLocked(tasks_.at(id));
    }
    if (!r.error.empty()) return finish(TaskState::kError, r.error, -1);
    if (r.cancelled) {
      bool stopping;
      {
        std::lock_guard lock(mu_);
        stopping = stopping_;
      }
      if (stopping)
        return finish(TaskState::kError, "Kiln stopped while the task ran", r.exit_code);
      return finish(TaskState::kCancelled, "Cancelled", r.exit_code);
    }
    if (r.timed_out)
      return finish(TaskState::kTimeout, "Ran longer than " + std::to_string(t.timeout) + " s",
                    r.exit_code);
    std::string limit = "(limit " + std::to_string(code.memory_mb) + " MB)";
    if (r.oom && r.exit_code != 0)
      return finish(TaskState::kError, "Out of memory " + limit, r.exit_code);
    if (auto why = DiskStopMessage(r, code.disk_mb, options_.min_free_disk_bytes); !why.empty())
      return finish(TaskState::kError, why, r.exit_code);
    if (r.exit_code != 0)
      return finish(TaskState::kError,
                    "Exit code " + std::to_string(r.exit_code) + ": " + Tail(LogPath(id), 1024),
                    r.exit_code);
    // The exit code decides (contract §3.6); a process the task lost on the
    // way is still worth a word.
    finish(TaskState::kComplete,
           r.oom
               ? "A process of the task was killed: out of memory " + limit + "; the task exited 0"
               : "",
           0);
  };
  runner::RunOptions o;
  o.id = "kiln-" + id;
  o.image_rootfs = image->rootfs;
  o.work_dir = (work / "run").string();
  o.log_path = LogPath(id);
  o.max_log_bytes = options_.max_log_bytes;
  o.timeout = std::chrono::seconds(t.timeout);
  o.cancel = cancel.get();
  o.max_task_dir_bytes = code.disk_mb << 20;
  o.min_free_disk_bytes = options_.min_free_disk_bytes;
  o.on_exit = report;
  auto r = runc_.Run(spec, o);
  if (!reported) report(r);  // it could not run at all
  RemoveRunDir(work);
}

}  // namespace kiln::worker
