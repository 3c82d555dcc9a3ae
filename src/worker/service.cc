#include "worker/service.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/ids.h"

namespace kiln::worker {
namespace fs = std::filesystem;

namespace {
std::string Tail(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > n ? s.substr(s.size() - n) : s;
}
}  // namespace

Service::Service(store::Store& store, const Clock& clock, runner::ImageStore& images,
                 const runner::Runc& runc, ServiceOptions options)
    : store_(store), clock_(clock), images_(images), runc_(runc), options_(std::move(options)) {
  if (options_.slots <= 0)
    options_.slots = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

Service::~Service() { Stop(); }

std::string Service::LogPath(const std::string& id) const {
  return options_.data_dir + "/task-logs/" + id + ".log";
}

void Service::Save(const Task& t) { store_.PutWorkerRecord("task/" + t.id, EncodeTask(t)); }

Result<void> Service::Recover() {
  std::lock_guard lock(mu_);
  auto r = store_.ForEachWorkerRecord("code/", [&](std::string_view, std::string_view v) {
    if (auto c = DecodeCode(v)) {
      code_by_name_[{c->project_id, c->name}] = c->id;
      codes_[c->id] = std::move(*c);
    }
  });
  if (!r) return r;
  TimeMs now = clock_.NowMs();
  // Containers and work dirs of runs that Kiln did not see to the end (it
  // died meanwhile): killed and removed before anything runs again.
  std::error_code ec;
  for (const auto& d : fs::directory_iterator(fs::path(options_.data_dir) / "task-work", ec)) {
    std::string id = d.path().filename().string();
    runc_.Sweep("kiln-" + id, (d.path() / "run").string());
    fs::remove_all(d.path(), ec);
  }
  return store_.ForEachWorkerRecord("task/", [&](std::string_view, std::string_view v) {
    auto t = DecodeTask(v);
    if (!t) return;
    next_seq_ = std::max(next_seq_, t->seq + 1);
    if (t->state == TaskState::kPreparing || t->state == TaskState::kRunning) {
      t->state = TaskState::kError;
      t->msg = "Kiln stopped while the task ran";
      t->end_time = t->updated_at = now;
      Save(*t);
    }
    if (t->state == TaskState::kQueued) queued_.insert({-t->priority, t->seq, t->id});
    tasks_[t->id] = std::move(*t);
  });
}

void Service::Start() {
  std::lock_guard lock(mu_);
  stopping_ = false;
  for (int i = 0; i < options_.slots; ++i) slots_.emplace_back([this] { SlotLoop(); });
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
}

Result<Code> Service::PutCode(const std::string& project, Code spec) {
  if (spec.name.empty()) return Fail(Error::InvalidArgument("name is required"));
  if (spec.image.empty() || spec.command.empty())
    return Fail(Error::InvalidArgument("an image code needs image and command"));
  if (spec.max_concurrency < 0)
    return Fail(Error::InvalidArgument("max_concurrency must be 0 or more"));
  std::lock_guard lock(mu_);
  spec.project_id = project;
  auto it = code_by_name_.find({project, spec.name});
  if (it != code_by_name_.end()) {
    const Code& old = codes_.at(it->second);
    spec.id = old.id;
    spec.rev = old.rev + 1;
    spec.created_at = old.created_at;
  } else {
    spec.id = NewObjectId(clock_.NowMs());
    spec.rev = 1;
    spec.created_at = clock_.NowMs();
  }
  if (auto r = store_.PutWorkerRecord("code/" + spec.id, EncodeCode(spec)); !r)
    return Fail(r.error());
  code_by_name_[{project, spec.name}] = spec.id;
  codes_[spec.id] = spec;
  cv_.notify_all();  // a higher max_concurrency may let tasks start
  return spec;
}

Result<Code> Service::GetCode(const std::string& project, const std::string& name_or_id) const {
  std::lock_guard lock(mu_);
  auto byname = code_by_name_.find({project, name_or_id});
  auto it = codes_.find(byname != code_by_name_.end() ? byname->second : name_or_id);
  if (it == codes_.end() || it->second.project_id != project)
    return Fail(Error::NotFound("Code not found"));
  return it->second;
}

Result<std::vector<std::string>> Service::QueueTasks(const std::string& project,
                                                     const std::vector<NewTask>& tasks) {
  std::lock_guard lock(mu_);
  std::vector<Task> made;
  TimeMs now = clock_.NowMs();
  for (const auto& n : tasks) {
    auto byname = code_by_name_.find({project, n.code_name});
    if (byname == code_by_name_.end())
      return Fail(Error::NotFound("Code not found: " + n.code_name));
    if (n.priority < 0 || n.priority > 2)
      return Fail(Error::InvalidArgument("priority must be 0, 1 or 2"));
    if (n.timeout < 1 || n.timeout > 3600)
      return Fail(Error::InvalidArgument("timeout must be between 1 and 3600"));
    if (n.delay < 0 || n.delay > 604800)
      return Fail(Error::InvalidArgument("delay must be between 0 and 604800"));
    if (n.payload.size() > 64 * 1024) return Fail(Error::TooLarge("payload exceeds 64 KB"));
    const Code& c = codes_.at(byname->second);
    Task t;
    t.id = NewObjectId(now);
    t.project_id = project;
    t.code_id = c.id;
    t.code_name = c.name;
    t.code_rev = c.rev;
    t.payload = n.payload;
    t.priority = n.priority;
    t.timeout = n.timeout;
    t.run_after = now + n.delay * 1000;
    t.label = n.label;
    t.cluster = n.cluster;
    t.created_at = t.updated_at = now;
    t.seq = next_seq_++;
    made.push_back(std::move(t));
  }
  std::vector<std::string> ids;
  for (auto& t : made) {
    if (auto r = store_.PutWorkerRecord("task/" + t.id, EncodeTask(t)); !r) return Fail(r.error());
    ids.push_back(t.id);
    queued_.insert({-t.priority, t.seq, t.id});
    tasks_[t.id] = std::move(t);
  }
  cv_.notify_all();
  return ids;
}

Result<Task> Service::GetTask(const std::string& project, const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end() || it->second.project_id != project)
    return Fail(Error::NotFound("Task not found"));
  return it->second;
}

Result<void> Service::Cancel(const std::string& project, const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end() || it->second.project_id != project)
    return Fail(Error::NotFound("Task not found"));
  Task& t = it->second;
  if (Final(t.state)) return Ok();
  if (t.state == TaskState::kQueued) {
    queued_.erase({-t.priority, t.seq, t.id});
    t.state = TaskState::kCancelled;
    t.end_time = t.updated_at = clock_.NowMs();
    Save(t);
    return Ok();
  }
  if (auto c = cancels_.find(id); c != cancels_.end()) *c->second = true;  // the slot finishes it
  return Ok();
}

Result<std::string> Service::Log(const std::string& project, const std::string& id) const {
  auto t = GetTask(project, id);
  if (!t) return Fail(t.error());
  std::ifstream in(LogPath(id), std::ios::binary);
  if (!in) return Fail(Error::NotFound("Log not found"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Service::PickLocked(TimeMs now) {
  for (const auto& [neg, seq, id] : queued_) {
    const Task& t = tasks_.at(id);
    if (t.run_after > now) continue;
    auto c = codes_.find(t.code_id);
    if (c != codes_.end() && c->second.max_concurrency > 0 &&
        running_by_code_[t.code_id] >= c->second.max_concurrency)
      continue;
    std::string picked = id;
    queued_.erase({neg, seq, id});
    // Taken under the lock, so that a cancel from now on reaches the slot.
    Task& live = tasks_.at(picked);
    live.state = TaskState::kPreparing;
    live.updated_at = now;
    Save(live);
    ++running_by_code_[live.code_id];
    cancels_[picked] = std::make_shared<std::atomic<bool>>(false);
    return picked;
  }
  return "";
}

void Service::SlotLoop() {
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

void Service::RunTask(const std::string& id) {
  Task t;
  Code code;
  std::shared_ptr<std::atomic<bool>> cancel;
  {
    std::lock_guard lock(mu_);
    t = tasks_.at(id);
    code = codes_.at(t.code_id);
    cancel = cancels_.at(id);
  }
  auto finish = [&](TaskState state, std::string msg, int exit_code) {
    std::lock_guard lock(mu_);
    Task& live = tasks_.at(id);
    live.state = state;
    live.msg = std::move(msg);
    live.exit_code = exit_code;
    live.end_time = live.updated_at = clock_.NowMs();
    Save(live);
    --running_by_code_[t.code_id];
    cancels_.erase(id);
    cv_.notify_all();
  };

  if (auto why = runc_.Unavailable(); !why.empty()) return finish(TaskState::kError, why, -1);
  Result<runner::ImageInfo> image = Fail(Error::Internal("no image"));
  {
    std::lock_guard lock(images_mu_);
    image = code.image == "busybox" ? images_.Busybox() : images_.Find(code.image);
  }
  if (!image) return finish(TaskState::kError, image.error().message(), -1);

  std::error_code ec;
  fs::path work = fs::path(options_.data_dir) / "task-work" / id;
  fs::path task_dir = work / "task";
  fs::create_directories(task_dir, ec);
  fs::create_directories(fs::path(options_.data_dir) / "task-logs", ec);
  std::ofstream(task_dir / "payload.json") << t.payload;
  runner::ContainerSpec spec;
  spec.args = {"/bin/sh", "-c", code.command};
  spec.task_dir = task_dir.string();
  spec.memory_bytes = code.memory_mb << 20;
  spec.env = {{"TASK_ID", t.id},
              {"TASK_DIR", runner::kTaskDirInContainer},
              {"PAYLOAD_FILE", std::string(runner::kTaskDirInContainer) + "/payload.json"}};
  if (!code.config.empty()) {
    std::ofstream(task_dir / "config.json") << code.config;
    spec.env.emplace_back("CONFIG_FILE", std::string(runner::kTaskDirInContainer) + "/config.json");
  }
  for (const auto& e : code.env_vars) spec.env.push_back(e);

  {
    std::lock_guard lock(mu_);
    Task& live = tasks_.at(id);
    live.state = TaskState::kRunning;
    live.start_time = live.updated_at = clock_.NowMs();
    Save(live);
  }
  runner::RunOptions o;
  o.id = "kiln-" + id;
  o.image_rootfs = image->rootfs;
  o.work_dir = (work / "run").string();
  o.log_path = LogPath(id);
  o.max_log_bytes = options_.max_log_bytes;
  o.timeout = std::chrono::seconds(t.timeout);
  o.cancel = cancel.get();
  auto r = runc_.Run(spec, o);
  fs::remove_all(work, ec);

  if (!r.error.empty()) return finish(TaskState::kError, r.error, -1);
  if (r.cancelled) {
    bool stopping;
    {
      std::lock_guard lock(mu_);
      stopping = stopping_;
    }
    if (stopping) return finish(TaskState::kError, "Kiln stopped while the task ran", r.exit_code);
    return finish(TaskState::kCancelled, "Cancelled", r.exit_code);
  }
  if (r.timed_out)
    return finish(TaskState::kTimeout, "Ran longer than " + std::to_string(t.timeout) + " s",
                  r.exit_code);
  if (r.oom)
    return finish(TaskState::kError,
                  "Out of memory (limit " + std::to_string(code.memory_mb) + " MB)", r.exit_code);
  if (r.exit_code != 0)
    return finish(TaskState::kError,
                  "Exit code " + std::to_string(r.exit_code) + ": " + Tail(LogPath(id), 1024),
                  r.exit_code);
  finish(TaskState::kComplete, "", 0);
}

}  // namespace kiln::worker
