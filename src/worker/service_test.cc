// The task service end to end below the API: real RocksDB, real runc with the
// busybox image. Tests that run containers skip, with the reason, where
// runc cannot run.
#include "worker/service.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "runner/code_package.h"
#include "store/rocks/rocks_store.h"
#include "tests/support/forwarding_store.h"
#include "tests/support/temp_dir.h"

namespace kiln::worker {
namespace {

constexpr char kProject[] = "0123456789abcdef01234567";

// A code that runs `command` in the busybox image.
worker::Code BusyboxCode(const std::string& name, const std::string& command) {
  worker::Code c;
  c.name = name;
  c.image = "busybox";
  c.command = command;
  return c;
}

// The task's whole log as text, or the error that kept it.
std::string LogText(const Service& svc, const std::string& id) {
  auto log = svc.Log(kProject, id);
  if (!log) return "error: " + log.error().message();
  auto text = (*log)->Read();
  return text ? *text : "error: " + text.error().message();
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open(int slots = 2) {
    service_.reset();
    store_.reset();
    store_ = std::move(*store::rocks::Open({dir_.path() + "/db"}));
    ServiceOptions o{dir_.path(), slots};
    o.max_task_memory_mb = max_task_memory_mb_;
    o.max_running_per_project = max_running_per_project_;
    service_ = std::make_unique<Service>(*store_, *SystemClock::Get(), images_, runc_, o);
    ASSERT_TRUE(service_->Recover());
  }
  void NeedContainers() {
    if (auto why = runc_.Unavailable(); !why.empty()) GTEST_SKIP() << why;
    if (auto img = images_.Busybox(); !img) {
      ASSERT_EQ(img.error().code(), ErrorCode::kUnavailable) << img.error().message();
      GTEST_SKIP() << img.error().message();
    }
  }
  void Code(const std::string& name, const std::string& command, int64_t max_concurrency = 0) {
    worker::Code c = BusyboxCode(name, command);
    c.max_concurrency = max_concurrency;
    ASSERT_TRUE(service_->PutCode(kProject, c));
  }
  std::string Queue(const std::string& code, std::string payload = "{}", int priority = 0,
                    int64_t timeout = 60) {
    NewTask n;
    n.code_name = code;
    n.payload = std::move(payload);
    n.priority = priority;
    n.timeout = timeout;
    auto ids = service_->QueueTasks(kProject, {n});
    EXPECT_TRUE(ids) << ids.error().message();
    return ids->at(0);
  }
  Task WaitFinal(const std::string& id) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      auto t = service_->GetTask(kProject, id);
      if (t && Final(t->state)) return *t;
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "task " << id << " did not finish";
        return t ? *t : Task{};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  testing::TempDir dir_;
  runner::ImageStore images_{dir_.path() + "/images"};
  runner::Runc runc_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Service> service_;
  int64_t max_task_memory_mb_ = -1;  // ServiceOptions of Open
  int max_running_per_project_ = 0;
};

TEST_F(ServiceTest, RunsATaskWithItsPayloadAndKeepsItsLog) {
  NeedContainers();
  Code("hello", "echo task=$TASK_ID dir=$TASK_DIR; cat $PAYLOAD_FILE");
  service_->Start();
  auto id = Queue("hello", "{\"n\":1}");
  auto t = WaitFinal(id);
  EXPECT_EQ(t.state, TaskState::kComplete) << t.msg;
  EXPECT_EQ(t.exit_code, 0);
  EXPECT_GT(t.end_time, 0);
  EXPECT_EQ(LogText(*service_, id), "task=" + id + " dir=/task\n{\"n\":1}");
}

TEST_F(ServiceTest, FailuresTimeoutsAndCancels) {
  NeedContainers();
  Code("fails", "echo something broke >&2; exit 4");
  Code("sleeps", "sleep 30");
  service_->Start();
  auto failed = WaitFinal(Queue("fails"));
  EXPECT_EQ(failed.state, TaskState::kError);
  EXPECT_EQ(failed.exit_code, 4);
  EXPECT_NE(failed.msg.find("something broke"), std::string::npos) << failed.msg;
  auto slow = WaitFinal(Queue("sleeps", "{}", 0, 1));
  EXPECT_EQ(slow.state, TaskState::kTimeout);
  auto cancel = Queue("sleeps");
  for (int i = 0; i < 1500 && service_->GetTask(kProject, cancel)->state != TaskState::kRunning;
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // a running task is killed
  ASSERT_TRUE(service_->Cancel(kProject, cancel));
  EXPECT_EQ(WaitFinal(cancel).state, TaskState::kCancelled);
}

// `kiln image rm` of an image a task is running on is refused until the
// task has ended: its overlay's lower layer would vanish under it.
TEST_F(ServiceTest, AnImageARunningTaskUsesCannotBeRemovedUntilItEnds) {
  NeedContainers();
  Code("holds", "sleep 1; cat /bin/busybox > /dev/null && echo still there");
  service_->Start();
  auto id = Queue("holds");
  for (int i = 0; i < 1500 && service_->GetTask(kProject, id)->state != TaskState::kRunning; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(service_->GetTask(kProject, id)->state, TaskState::kRunning);
  auto refused = images_.Remove("busybox");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnavailable);
  auto t = WaitFinal(id);
  EXPECT_EQ(t.state, TaskState::kComplete) << t.msg;
  EXPECT_EQ(LogText(*service_, id), "still there\n");
  // The hold goes with the container's clean-up, just after the task ends.
  Result<bool> removed = Fail(Error::Internal("not tried"));
  for (int i = 0; i < 500 && !(removed = images_.Remove("busybox")); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(removed) << removed.error().message();
}

TEST_F(ServiceTest, HigherPriorityFirstThenFifoOnOneSlot) {
  NeedContainers();
  Open(1);
  Code("job", "true");
  Code("blocker", "sleep 1");
  service_->Start();
  auto block = Queue("blocker");
  for (int i = 0; i < 1500 && service_->GetTask(kProject, block)->state == TaskState::kQueued; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // until the slot has it
  ASSERT_NE(service_->GetTask(kProject, block)->state, TaskState::kQueued);
  auto low = Queue("job", "{}", 0);
  auto high = Queue("job", "{}", 2);
  auto mid = Queue("job", "{}", 1);
  auto high2 = Queue("job", "{}", 2);
  std::vector<std::pair<TimeMs, std::string>> starts;
  for (const auto& id : {block, low, high, mid, high2})
    starts.emplace_back(WaitFinal(id).start_time, id);
  std::sort(starts.begin(), starts.end());
  std::vector<std::string> order;
  for (auto& [at, id] : starts) order.push_back(id);
  EXPECT_EQ(order, (std::vector<std::string>{block, high, high2, mid, low}));
}

// A queue with nothing runnable is not walked again until something
// changes; every change that can let a task start is one: a task queued, a
// code resumed, a task of a code at its max_concurrency ended, a delay run
// out.
TEST_F(ServiceTest, TasksHeldBackStartAsSoonAsTheyCan) {
  NeedContainers();
  Open(2);
  Code("held", "true");
  Code("one-at-a-time", "sleep 1", 1);
  Code("now", "true");
  service_->Start();
  ASSERT_TRUE(service_->SetPaused(kProject, "held", true));
  std::vector<std::string> held;
  for (int i = 0; i < 3; ++i) held.push_back(Queue("held"));
  NewTask later;
  later.code_name = "now";
  later.payload = "{}";
  later.delay = 1;
  auto delayed = service_->QueueTasks(kProject, {later});
  ASSERT_TRUE(delayed);
  auto first = Queue("one-at-a-time");
  auto second = Queue("one-at-a-time");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // picks find nothing more
  auto fresh = Queue("now");
  EXPECT_EQ(WaitFinal(fresh).state, TaskState::kComplete);
  ASSERT_TRUE(service_->SetPaused(kProject, "held", false));
  for (const auto& id : held) EXPECT_EQ(WaitFinal(id).state, TaskState::kComplete);
  Task d = WaitFinal(delayed->at(0));
  EXPECT_EQ(d.state, TaskState::kComplete);
  EXPECT_GE(d.start_time, d.created_at + 1000);
  Task a = WaitFinal(first), b = WaitFinal(second);
  EXPECT_EQ(b.state, TaskState::kComplete);
  EXPECT_GE(b.start_time, a.end_time);  // max_concurrency 1: after the first ended
}

// Projects take turns at the slots: priorities order a project's own tasks,
// not one project's before another's.
TEST_F(ServiceTest, ProjectsTakeTurnsAtTheSlots) {
  NeedContainers();
  Open(1);
  constexpr char kOther[] = "fedcba9876543210fedcba98";
  Code("job", "true");
  Code("blocker", "sleep 1");
  ASSERT_TRUE(service_->PutCode(kOther, BusyboxCode("job", "true")));
  service_->Start();
  auto block = Queue("blocker");
  for (int i = 0; i < 1500 && service_->GetTask(kProject, block)->state == TaskState::kQueued; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // until the slot has it
  ASSERT_NE(service_->GetTask(kProject, block)->state, TaskState::kQueued);
  auto a1 = Queue("job", "{}", 2), a2 = Queue("job", "{}", 2);
  NewTask n;
  n.code_name = "job";
  n.priority = 0;
  auto b1 = service_->QueueTasks(kOther, {n})->at(0), b2 = service_->QueueTasks(kOther, {n})->at(0);
  auto start = [&](const std::string& project, const std::string& id) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      auto t = service_->GetTask(project, id);
      if (t && Final(t->state)) return t->start_time;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << id << " did not finish";
    return TimeMs{0};
  };
  std::vector<std::pair<TimeMs, std::string>> starts = {{start(kProject, block), "block"},
                                                        {start(kProject, a1), "a1"},
                                                        {start(kProject, a2), "a2"},
                                                        {start(kOther, b1), "b1"},
                                                        {start(kOther, b2), "b2"}};
  std::sort(starts.begin(), starts.end());
  std::vector<std::string> order;
  for (auto& [at, id] : starts) order.push_back(id);
  EXPECT_EQ(order, (std::vector<std::string>{"block", "b1", "a1", "b2", "a2"}));
}

// --max-running-per-project: a project's tasks beyond it wait, while
// another project's use the free slot.
TEST_F(ServiceTest, AProjectRunsAtMostItsLimitAtOnce) {
  NeedContainers();
  max_running_per_project_ = 1;
  Open(2);
  constexpr char kOther[] = "fedcba9876543210fedcba98";
  Code("nap", "sleep 0.5");
  ASSERT_TRUE(service_->PutCode(kOther, BusyboxCode("nap", "sleep 0.5")));
  auto a1 = Queue("nap"), a2 = Queue("nap");
  NewTask n;
  n.code_name = "nap";
  auto b1 = service_->QueueTasks(kOther, {n})->at(0);
  service_->Start();
  Task first = WaitFinal(a1), second = WaitFinal(a2);
  Task other;
  for (int i = 0; i < 1500; ++i) {
    other = *service_->GetTask(kOther, b1);
    if (Final(other.state)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(other.state, TaskState::kComplete) << other.msg;
  EXPECT_GE(second.start_time, first.end_time);  // one of the project's at a time
  EXPECT_LT(other.start_time, first.end_time);   // the other project's ran meanwhile
}

TEST_F(ServiceTest, QueuedTasksSurviveARestartAndRunningOnesEndAsErrors) {
  Code("later", "true");
  auto queued = Queue("later");
  Task running = *service_->GetTask(kProject, queued);
  running.id = "aaaaaaaaaaaaaaaaaaaaaaaa";
  running.state = TaskState::kRunning;
  ASSERT_TRUE(store_->PutWorkerRecord("task/" + running.id, EncodeTask(running)));
  Open();
  EXPECT_EQ(service_->GetTask(kProject, queued)->state, TaskState::kQueued);
  auto ended = service_->GetTask(kProject, running.id);
  EXPECT_EQ(ended->state, TaskState::kError);
  EXPECT_EQ(ended->msg, "Kiln stopped while the task ran");
  // Not retried: the code has no retries.
  EXPECT_EQ(service_->ListTasks(kProject, {})->size(), 2u);
}

// A container of this server's task that outlived its work dir (its `runc
// delete` failed, then the dir went) is found by its runc state and
// removed at the next start; another server's on the host is left alone.
TEST_F(ServiceTest, AnOrphanContainerWithoutAWorkDirIsRemovedAtStart) {
  namespace fs = std::filesystem;
  NeedContainers();
  Code("done", "true");
  service_->Start();
  auto id = Queue("done");
  ASSERT_EQ(WaitFinal(id).state, TaskState::kComplete);
  // The orphan: a bare runc container named as this task's run was.
  std::string bundle = dir_.path() + "/orphan-bundle";
  fs::create_directories(bundle);
  ASSERT_EQ(std::system(("cd " + bundle + " && runc spec").c_str()), 0);
  rapidjson::Document spec;
  {
    std::ifstream in(bundle + "/config.json");
    std::stringstream text;
    text << in.rdbuf();
    spec.Parse(text.str().c_str());
  }
  auto& a = spec.GetAllocator();
  spec["process"]["terminal"] = false;
  spec["process"]["args"].SetArray().PushBack("sleep", a).PushBack("300", a);
  spec["root"]["path"].SetString(images_.Busybox()->rootfs.c_str(), a);
  {
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    spec.Accept(w);
    std::ofstream(bundle + "/config.json") << sb.GetString();
  }
  std::string name = "kiln-" + id, other = "kiln-other-server-" + id;
  for (const auto& c : {name, other})
    ASSERT_EQ(std::system(("runc --root /run/kiln-runc run -d --bundle " + bundle + " " + c +
                           " </dev/null >/dev/null 2>&1")
                              .c_str()),
              0);
  ASSERT_TRUE(fs::exists("/run/kiln-runc/" + name));
  Open();
  EXPECT_FALSE(fs::exists("/run/kiln-runc/" + name));
  EXPECT_TRUE(fs::exists("/run/kiln-runc/" + other));
  std::system(("runc --root /run/kiln-runc delete --force " + other + " >/dev/null 2>&1").c_str());
}

TEST_F(ServiceTest, ATaskCutOffByACrashIsRetriedWhenItsCodeHasRetries) {
  worker::Code c = BusyboxCode("flaky", "true");
  c.retries = 1;
  ASSERT_TRUE(service_->PutCode(kProject, c));
  Task running = *service_->GetTask(kProject, Queue("flaky"));
  running.id = "bbbbbbbbbbbbbbbbbbbbbbbb";
  running.state = TaskState::kRunning;
  ASSERT_TRUE(store_->PutWorkerRecord("task/" + running.id, EncodeTask(running)));
  Open();
  std::vector<Task> retries;
  auto listed = service_->ListTasks(kProject, {});
  ASSERT_TRUE(listed);
  for (const auto& t : *listed)
    if (t.original_task_id == running.id) retries.push_back(t);
  ASSERT_EQ(retries.size(), 1u);
  EXPECT_EQ(retries[0].state, TaskState::kQueued);
  EXPECT_EQ(retries[0].retry_count, 1);
}

TEST_F(ServiceTest, LeftoversOfAKilledServerAreSweptAtStart) {
  NeedContainers();
  // What a run looks like when Kiln dies in the middle: the run's tmpfs in
  // the task's work dir, and an overlay mounted from it.
  namespace fs = std::filesystem;
  fs::path run = fs::path(dir_.path()) / "task-work" / "bbbbbbbbbbbbbbbbbbbbbbbb" / "run";
  fs::create_directories(run);
  ASSERT_EQ(mount("kiln-run", run.c_str(), "tmpfs", 0, "mode=0700"), 0);
  for (auto d : {"upper", "overlay-work", "bundle/rootfs"}) fs::create_directories(run / d);
  std::string opts = "lowerdir=" + images_.Busybox()->rootfs +
                     ",upperdir=" + (run / "upper").string() +
                     ",workdir=" + (run / "overlay-work").string();
  ASSERT_EQ(mount("overlay", (run / "bundle/rootfs").c_str(), "overlay", 0, opts.c_str()), 0);
  Open();
  std::ifstream mounts("/proc/mounts");
  std::stringstream ss;
  ss << mounts.rdbuf();
  EXPECT_EQ(ss.str().find(run.string()), std::string::npos);
  EXPECT_FALSE(fs::exists(run.parent_path()));
}

// Kiln's stop puts a task that is being prepared back in the queue (it ran
// nothing) and ends a running one as an error that is retried like any
// error, as after a crash; both survive the restart. The prepared task's
// package is a FIFO here, so that its slot waits in the unpack until the
// stop has begun.
TEST_F(ServiceTest, AStopQueuesAgainATaskBeingPreparedAndRetriesARunningOne) {
  NeedContainers();
  namespace fs = std::filesystem;
  Open(2);
  worker::Code runs = BusyboxCode("runs", "sleep 30");
  runs.retries = 1;
  ASSERT_TRUE(service_->PutCode(kProject, runs));
  fs::path src = fs::path(dir_.path()) / "src";
  fs::create_directories(src);
  std::ofstream(src / "run.sh") << "true\n";
  auto zip = runner::ZipDirectory(src.string());
  ASSERT_TRUE(zip);
  worker::Code zipped;
  zipped.name = "zipped";
  zipped.command = "sh run.sh";
  auto code = service_->PutCode(kProject, zipped, *zip);
  ASSERT_TRUE(code) << code.error().message();
  fs::path package =
      fs::path(dir_.path()) / "codes" / code->id / (std::to_string(code->rev) + ".zip");
  ASSERT_TRUE(fs::remove(package));
  ASSERT_EQ(mkfifo(package.c_str(), 0600), 0);
  service_->Start();
  auto running = Queue("runs");
  for (int i = 0; i < 500 && service_->GetTask(kProject, running)->state != TaskState::kRunning;
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(service_->GetTask(kProject, running)->state, TaskState::kRunning);
  auto prepared = Queue("zipped");
  for (int i = 0; i < 500 && service_->GetTask(kProject, prepared)->state != TaskState::kPreparing;
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(service_->GetTask(kProject, prepared)->state, TaskState::kPreparing);
  // The stop waits for the slot in the unpack; the FIFO's writer lets it
  // go on a second later, with nothing to read.
  // A slot that saw the stop before it opened the package never reads it:
  // the writer does not wait for a reader then (O_NONBLOCK: ENXIO without
  // one), it tries until the stop is over.
  std::atomic<bool> stopped{false};
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    while (!stopped) {
      int fd = open(package.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd >= 0) {
        close(fd);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  service_->Stop();
  stopped = true;
  writer.join();
  EXPECT_EQ(service_->GetTask(kProject, prepared)->state, TaskState::kQueued);
  Open();
  EXPECT_EQ(service_->GetTask(kProject, prepared)->state, TaskState::kQueued);
  auto ended = service_->GetTask(kProject, running);
  EXPECT_EQ(ended->state, TaskState::kError);
  EXPECT_EQ(ended->msg, "Kiln stopped while the task ran");
  std::vector<Task> retries;
  auto listed = service_->ListTasks(kProject, {});
  ASSERT_TRUE(listed);
  for (const auto& t : *listed)
    if (t.original_task_id == running) retries.push_back(t);
  ASSERT_EQ(retries.size(), 1u);
  EXPECT_EQ(retries[0].state, TaskState::kQueued);
}

// A task recorded as preparing (progress posted while it was prepared, by
// an older Kiln) ran nothing: after a crash it is queued again.
TEST_F(ServiceTest, ATaskRecordedAsPreparingIsQueuedAgainAfterACrash) {
  Code("later", "true");
  auto id = Queue("later");
  Task t = *service_->GetTask(kProject, id);
  t.state = TaskState::kPreparing;  // as a slot has it in memory
  ASSERT_TRUE(store_->PutWorkerRecord("task/" + id, EncodeTask(t)));
  Open();  // a crash while preparing: queued again
  ASSERT_EQ(service_->GetTask(kProject, id)->state, TaskState::kQueued);
}

// A task that ended before its container ran has an empty log, not none:
// clients poll the log until it is there.
TEST_F(ServiceTest, ATaskThatNeverRanHasAnEmptyLog) {
  Code("held", "true");
  ASSERT_TRUE(service_->SetPaused(kProject, "held", true));
  auto id = Queue("held");
  EXPECT_EQ(service_->Log(kProject, id).error().code(), ErrorCode::kNotFound);  // not yet
  ASSERT_TRUE(service_->Cancel(kProject, id));
  auto log = service_->Log(kProject, id);
  ASSERT_TRUE(log) << log.error().message();
  EXPECT_EQ((*log)->size(), 0u);
}

// Once the server is shutting down, a watch of a task wakes at once and is
// not kept (its wake would post to an io context that is going away).
TEST_F(ServiceTest, AWatchAfterTheShutdownBeganWakesAtOnce) {
  Code("held", "true");
  ASSERT_TRUE(service_->SetPaused(kProject, "held", true));
  auto id = Queue("held");
  int before = 0, after = 0;
  auto early = std::make_shared<std::function<void()>>([&] { ++before; });
  ASSERT_TRUE(service_->Watch(kProject, id, early));
  service_->WakeWatchers();
  EXPECT_EQ(before, 1);
  auto late = std::make_shared<std::function<void()>>([&] { ++after; });
  ASSERT_TRUE(service_->Watch(kProject, id, late));
  EXPECT_EQ(after, 1);
  ASSERT_TRUE(service_->Cancel(kProject, id));  // the end wakes nobody now
  EXPECT_EQ(before, 1);
  EXPECT_EQ(after, 1);
}

TEST_F(ServiceTest, BadRequestsQueueNothing) {
  Code("ok", "true");
  NewTask unknown;
  unknown.code_name = "nope";
  EXPECT_EQ(service_->QueueTasks(kProject, {unknown}).error().code(), ErrorCode::kNotFound);
  NewTask bad;
  bad.code_name = "ok";
  bad.priority = 3;
  EXPECT_EQ(service_->QueueTasks(kProject, {bad}).error().code(), ErrorCode::kInvalidArgument);
  bad.priority = 0;
  bad.payload = std::string(64 * 1024 + 1, 'x');
  EXPECT_EQ(service_->QueueTasks(kProject, {bad}).error().code(), ErrorCode::kTooLarge);
  EXPECT_FALSE(service_->GetTask("ffffffffffffffffffffffff", "x"));
  worker::Code noimage;
  noimage.name = "x";
  EXPECT_FALSE(service_->PutCode(kProject, noimage));
  // The host's network only where the server allows it.
  worker::Code host = BusyboxCode("host-net", "true");
  host.network = true;
  EXPECT_EQ(service_->PutCode(kProject, host).error().code(), ErrorCode::kPermissionDenied);
}

// A code may not ask for more memory than the server allows (its host's
// memory by default): refused at upload, and a task of a code uploaded when
// more was allowed ends in error without running.
TEST_F(ServiceTest, MemoryPastTheServersMaximumIsRefusedAndNotRun) {
  max_task_memory_mb_ = 256;
  Open();
  worker::Code big = BusyboxCode("big", "true");
  big.memory_mb = 512;
  auto refused = service_->PutCode(kProject, big);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().message().find("between 8 and 256 MB"), std::string::npos);
  big.memory_mb = 200;
  ASSERT_TRUE(service_->PutCode(kProject, big));
  max_task_memory_mb_ = 128;
  Open();
  service_->Start();
  Task t = WaitFinal(Queue("big"));
  EXPECT_EQ(t.state, TaskState::kError);
  EXPECT_NE(t.msg.find("asks for 200 MB of memory; this server allows at most 128 MB"),
            std::string::npos)
      << t.msg;
}

// A real store whose worker writes fail while `fail` is set, as a full or
// broken disk makes them fail.
class FailingWorkerWrites : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  bool fail = false;

  std::atomic<int> fail_next{0};  // fail this many writes of records, then succeed

  Result<void> PutWorkerRecords(const WorkerRecords& records) override {
    if (fail || fail_next.fetch_sub(1) > 0)
      return Fail(Error::Internal("store: IO error: No space left on device"));
    return real_.PutWorkerRecords(records);
  }
  Result<void> DeleteWorkerRecords(const std::vector<std::string>& keys) override {
    if (fail) return Fail(Error::Internal("store: IO error: No space left on device"));
    return real_.DeleteWorkerRecords(keys);
  }
};

// A service over a real store whose worker writes fail on demand; Open
// (again) is a restart over the same store.
class ServiceStoreFailureTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open() {
    svc.reset();
    svc = std::make_unique<Service>(store, *SystemClock::Get(), images, runc, Options());
    ASSERT_TRUE(svc->Recover());
  }
  ServiceOptions Options() const {
    ServiceOptions o{dir.path(), 1};
    o.run_schedules = false;
    return o;
  }

  testing::TempDir dir;
  runner::ImageStore images{dir.path() + "/images"};
  runner::Runc runc;
  std::unique_ptr<store::Store> real = std::move(*store::rocks::Open({dir.path() + "/db"}));
  FailingWorkerWrites store{*real};
  std::unique_ptr<Service> svc;
};

// A schedule's run is its task and the schedule's new count in one write:
// when the write fails, neither happened, and the next tick runs it.
TEST_F(ServiceStoreFailureTest, AScheduleRunWhoseWriteFailsIsRunAtTheNextTickOnce) {
  ASSERT_TRUE(svc->PutCode(kProject, BusyboxCode("once", "true")));
  Schedule one;
  one.code_name = "once";
  one.payload = "{}";
  one.run_times = 1;
  auto made = svc->CreateSchedules(kProject, {one});
  ASSERT_TRUE(made) << made.error().message();
  std::string id = made->at(0);

  store.fail = true;
  svc->RunDueSchedules();
  EXPECT_TRUE(svc->ListTasks(kProject, {})->empty());
  EXPECT_EQ(svc->GetSchedule(kProject, id)->run_count, 0);
  store.fail = false;
  svc->RunDueSchedules();
  svc->RunDueSchedules();
  auto tasks = *svc->ListTasks(kProject, {});
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].schedule_id, id);
  EXPECT_EQ(svc->GetSchedule(kProject, id)->run_count, 1);
  // And so after a restart: one run, recorded.
  Open();
  svc->RunDueSchedules();
  EXPECT_EQ(svc->ListTasks(kProject, {})->size(), 1u);
  EXPECT_EQ(svc->GetSchedule(kProject, id)->run_count, 1);
}

// A task is acknowledged only once it is recorded: a batch goes in one
// write, and a failed write queues none of it and says why.
TEST_F(ServiceStoreFailureTest, AFailedWriteQueuesNothingAndTheCallerHearsWhy) {
  ASSERT_TRUE(svc->PutCode(kProject, BusyboxCode("held", "true")));
  ASSERT_TRUE(svc->SetPaused(kProject, "held", true));  // nothing starts meanwhile
  NewTask n;
  n.code_name = "held";

  store.fail = true;
  auto failed = svc->QueueTasks(kProject, {n, n, n});
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message().find("No space left"), std::string::npos);
  EXPECT_TRUE(svc->ListTasks(kProject, {})->empty());

  store.fail = false;
  auto ids = svc->QueueTasks(kProject, {n, n, n});
  ASSERT_TRUE(ids);
  ASSERT_EQ(ids->size(), 3u);
  store.fail = true;
  EXPECT_FALSE(svc->CancelAll(kProject, "held"));  // cancelled here, but not recorded: said so
  EXPECT_FALSE(svc->QueueTasks(kProject, {n}));

  // After a restart: exactly the three that were acknowledged, still queued
  // (their cancel never reached the store).
  store.fail = false;
  Open();
  auto all = *svc->ListTasks(kProject, {});
  ASSERT_EQ(all.size(), 3u);
  std::set<std::string> got, want(ids->begin(), ids->end());
  for (const auto& t : all) {
    got.insert(t.id);
    EXPECT_EQ(t.state, TaskState::kQueued);
  }
  EXPECT_EQ(got, want);
}

// A failed task's end and its retry are one write: when it fails, neither
// is recorded, and after a restart the task (still running in the store)
// ends and is retried once, not twice.
TEST_F(ServiceStoreFailureTest, AFailedTasksEndAndItsRetryAreOneWrite) {
  if (auto why = runc.Unavailable(); !why.empty()) GTEST_SKIP() << why;
  if (auto img = images.Busybox(); !img) {
    ASSERT_EQ(img.error().code(), ErrorCode::kUnavailable) << img.error().message();
    GTEST_SKIP() << img.error().message();
  }
  worker::Code c = BusyboxCode("flaky", "sleep 1; exit 3");
  c.retries = 2;
  c.retries_delay = 3600;
  ASSERT_TRUE(svc->PutCode(kProject, c));
  NewTask n;
  n.code_name = "flaky";
  auto id = svc->QueueTasks(kProject, {n})->at(0);
  svc->Start();
  for (int i = 0; i < 500 && svc->GetTask(kProject, id)->state != TaskState::kRunning; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(svc->GetTask(kProject, id)->state, TaskState::kRunning);
  store.fail_next = 1;  // the write of its end
  for (int i = 0; i < 1000 && !Final(svc->GetTask(kProject, id)->state); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(svc->GetTask(kProject, id)->state, TaskState::kError);
  EXPECT_EQ(svc->ListTasks(kProject, {})->size(), 1u);  // no retry it could not record
  svc->Stop();
  Open();
  std::vector<Task> retries;
  auto listed = svc->ListTasks(kProject, {});
  ASSERT_TRUE(listed);
  for (const auto& t : *listed)
    if (t.original_task_id == id) retries.push_back(t);
  ASSERT_EQ(retries.size(), 1u);
  EXPECT_EQ(retries[0].retry_count, 1);
  EXPECT_EQ(svc->GetTask(kProject, id)->msg, "Kiln stopped while the task ran");
}

// A task whose start cannot be recorded does not run: the store still has
// it queued, and a restart would run it a second time, unrecorded.
TEST_F(ServiceStoreFailureTest, ATaskWhoseStartIsNotRecordedDoesNotRun) {
  if (auto why = runc.Unavailable(); !why.empty()) GTEST_SKIP() << why;
  if (auto img = images.Busybox(); !img) {
    ASSERT_EQ(img.error().code(), ErrorCode::kUnavailable) << img.error().message();
    GTEST_SKIP() << img.error().message();
  }
  ASSERT_TRUE(svc->PutCode(kProject, BusyboxCode("says", "echo ran")));
  NewTask n;
  n.code_name = "says";
  auto id = svc->QueueTasks(kProject, {n})->at(0);
  store.fail_next = 1;  // the first write from now on: "running"
  svc->Start();
  for (int i = 0; i < 1000 && !Final(svc->GetTask(kProject, id)->state); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto t = svc->GetTask(kProject, id);
  ASSERT_EQ(t->state, TaskState::kError);
  EXPECT_EQ(t->msg.rfind("Kiln could not record the task's start: ", 0), 0u) << t->msg;
  EXPECT_EQ(LogText(*svc, id), "");
  svc->Stop();
  Open();  // its end was recorded: it stays an error, and does not run again
  EXPECT_EQ(svc->GetTask(kProject, id)->state, TaskState::kError);
}

// Schedules queue tasks when they are due, by the clock: a fake one here.
TEST(ServiceScheduleTest, DueSchedulesQueueTasksThatRecordTheSchedule) {
  testing::TempDir dir;
  runner::ImageStore images(dir.path() + "/images");
  runner::Runc runc;
  auto store = std::move(*store::rocks::Open({dir.path() + "/db"}));
  FakeClock clock(1'900'000'020'000);
  ServiceOptions o{dir.path(), 1};
  o.run_schedules = false;
  Service svc(*store, clock, images, runc, o);
  ASSERT_TRUE(svc.Recover());
  ASSERT_TRUE(svc.PutCode(kProject, BusyboxCode("tick", "true")));
  Schedule s;
  s.code_name = "tick";
  s.payload = "{\"a\":1}";
  s.run_every = 60;
  s.run_times = 3;
  s.start_at = clock.NowMs() + 30'000;
  s.label = "nightly";
  auto ids = svc.CreateSchedules(kProject, {s});
  ASSERT_TRUE(ids) << ids.error().message();
  std::string sid = ids->at(0);
  auto count = [&] {
    TaskFilter f;
    f.code_name = "tick";
    return svc.ListTasks(kProject, f)->size();
  };
  svc.RunDueSchedules();
  EXPECT_EQ(count(), 0u);  // not yet due
  clock.Advance(30'000);
  svc.RunDueSchedules();
  svc.RunDueSchedules();  // once per due time
  ASSERT_EQ(count(), 1u);
  TaskFilter f;
  auto t = svc.ListTasks(kProject, f)->at(0);
  EXPECT_EQ(t.schedule_id, sid);
  EXPECT_EQ(t.payload, "{\"a\":1}");
  EXPECT_EQ(t.label, "nightly");
  clock.Advance(60'000);
  svc.RunDueSchedules();
  clock.Advance(10 * 60'000);  // one more run, then run_times is reached
  svc.RunDueSchedules();
  svc.RunDueSchedules();
  EXPECT_EQ(count(), 3u);
  auto done = svc.GetSchedule(kProject, sid);
  EXPECT_EQ(done->status, "complete");
  EXPECT_EQ(done->run_count, 3);
  EXPECT_EQ(done->msg, "Ran max times.");

  // A cancelled schedule queues nothing more, and that survives a restart.
  s.run_times = 0;
  s.start_at = clock.NowMs();
  auto other = svc.CreateSchedules(kProject, {s})->at(0);
  ASSERT_TRUE(svc.CancelSchedule(kProject, other));
  clock.Advance(60'000);
  svc.RunDueSchedules();
  EXPECT_EQ(count(), 3u);
  Service again(*store, clock, images, runc, o);
  ASSERT_TRUE(again.Recover());
  EXPECT_EQ(again.GetSchedule(kProject, other)->status, "cancelled");
  EXPECT_EQ(again.GetSchedule(kProject, sid)->run_count, 3);

  // A schedule that could never run is refused, not made complete.
  Schedule never;
  never.code_name = "tick";
  never.payload = "{}";
  never.cron = "0 0 30 2 *";
  auto refused = again.CreateSchedules(kProject, {never});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().message().find("never run"), std::string::npos);
}

// Finished tasks go, with their records and logs, after the retention time,
// and so do finished schedules; queued tasks and schedules still to run stay
// however old they are.
TEST(ServiceExpiryTest, FinishedTasksAreDroppedAfterTheRetentionTime) {
  testing::TempDir dir;
  runner::ImageStore images(dir.path() + "/images");
  runner::Runc runc;
  auto store = std::move(*store::rocks::Open({dir.path() + "/db"}));
  FakeClock clock;
  ServiceOptions o{dir.path(), 0};
  o.run_schedules = false;
  o.task_retention = std::chrono::hours(24);
  auto svc = std::make_unique<Service>(*store, clock, images, runc, o);
  ASSERT_TRUE(svc->Recover());
  ASSERT_TRUE(svc->PutCode(kProject, BusyboxCode("c", "true")));
  NewTask n;
  n.code_name = "c";
  auto ids = *svc->QueueTasks(kProject, {n, n});
  ASSERT_TRUE(svc->Cancel(kProject, ids[0]));  // finished now; ids[1] stays queued
  Schedule later;
  later.code_name = "c";
  later.payload = "{}";
  later.start_at = clock.NowMs() + 3600'000 * 1000LL;
  auto sids = *svc->CreateSchedules(kProject, {later, later});
  ASSERT_TRUE(svc->CancelSchedule(kProject, sids[0]));  // finished; sids[1] still to run
  std::filesystem::create_directories(dir.path() + "/task-logs");
  std::ofstream(dir.path() + "/task-logs/" + ids[0] + ".log") << "output";
  clock.Advance(23 * 3600'000);
  EXPECT_EQ(svc->ExpireTasks(), 0u);
  clock.Advance(2 * 3600'000);
  EXPECT_EQ(svc->ExpireTasks(), 1u);
  EXPECT_FALSE(svc->GetSchedule(kProject, sids[0]));
  EXPECT_TRUE(svc->GetSchedule(kProject, sids[1]));
  EXPECT_FALSE(svc->GetTask(kProject, ids[0]));
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/task-logs/" + ids[0] + ".log"));
  EXPECT_EQ(svc->GetTask(kProject, ids[1])->state, TaskState::kQueued);
  svc = std::make_unique<Service>(*store, clock, images, runc, o);  // and it stays gone
  ASSERT_TRUE(svc->Recover());
  EXPECT_FALSE(svc->GetTask(kProject, ids[0]));
  EXPECT_TRUE(svc->GetTask(kProject, ids[1]));
  EXPECT_FALSE(svc->GetSchedule(kProject, sids[0]));
  EXPECT_TRUE(svc->GetSchedule(kProject, sids[1]));
}

// A retention of 0 keeps finished tasks for ever (--task-retention-days 0),
// rather than dropping each as soon as it ends.
TEST(ServiceExpiryTest, ARetentionOfZeroKeepsFinishedTasks) {
  testing::TempDir dir;
  runner::ImageStore images(dir.path() + "/images");
  runner::Runc runc;
  auto store = std::move(*store::rocks::Open({dir.path() + "/db"}));
  FakeClock clock;
  ServiceOptions o{dir.path(), 0};
  o.run_schedules = false;
  o.task_retention = std::chrono::milliseconds(0);
  auto svc = std::make_unique<Service>(*store, clock, images, runc, o);
  ASSERT_TRUE(svc->Recover());
  ASSERT_TRUE(svc->PutCode(kProject, BusyboxCode("c", "true")));
  NewTask n;
  n.code_name = "c";
  auto ids = *svc->QueueTasks(kProject, {n});
  ASSERT_TRUE(svc->Cancel(kProject, ids[0]));
  clock.Advance(1000LL * 24 * 3600'000);
  EXPECT_EQ(svc->ExpireTasks(), 0u);
  EXPECT_TRUE(svc->GetTask(kProject, ids[0]));
}

// A project's packages, every kept revision counted, stay under its quota:
// an upload past it is refused and leaves nothing behind; the revisions the
// upload itself removes make room, other projects have their own quota,
// and deleting a code frees its share.
TEST(ServiceRevisionsTest, AProjectsPackagesStayUnderItsQuota) {
  namespace fs = std::filesystem;
  constexpr char kOther[] = "fedcba9876543210fedcba98";
  testing::TempDir dir;
  runner::ImageStore images(dir.path() + "/images");
  runner::Runc runc;
  auto store = std::move(*store::rocks::Open({dir.path() + "/db"}));
  FakeClock clock;
  fs::path src = fs::path(dir.path()) / "src";
  fs::create_directories(src);
  std::string noise(100'000, '\0');
  std::mt19937 random(7);
  for (auto& c : noise) c = static_cast<char>(random());  // does not compress
  std::ofstream(src / "blob", std::ios::binary) << noise;
  std::ofstream(src / "run.sh") << "true\n";
  auto zip = runner::ZipDirectory(src.string());
  ASSERT_TRUE(zip);
  auto size = static_cast<int64_t>(zip->size());
  ServiceOptions o{dir.path(), 0};
  o.run_schedules = false;
  o.max_code_revisions = 2;
  o.max_package_bytes_per_project = size * 5 / 2;
  Service svc(*store, clock, images, runc, o);
  ASSERT_TRUE(svc.Recover());
  auto upload = [&](const char* project, const char* name) {
    worker::Code c;
    c.name = name;
    c.command = "sh run.sh";
    return svc.PutCode(project, c, *zip);
  };
  ASSERT_TRUE(upload(kProject, "app"));
  ASSERT_TRUE(upload(kProject, "app"));
  auto third = upload(kProject, "app");  // removes revision 1: two kept
  ASSERT_TRUE(third) << third.error().message();
  auto refused = upload(kProject, "other");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(refused.error().message().find("quota"), std::string::npos);
  EXPECT_FALSE(svc.GetCode(kProject, "other"));
  for (const auto& e : fs::directory_iterator(fs::path(dir.path()) / "codes"))
    EXPECT_FALSE(e.path().extension() == ".tmp") << e.path();
  EXPECT_TRUE(upload(kOther, "other"));
  worker::Code image_code;  // no package: not held to the quota
  image_code.name = "img";
  image_code.image = "busybox";
  EXPECT_TRUE(svc.PutCode(kProject, image_code));
  ASSERT_TRUE(svc.DeleteCode(kProject, third->id));
  EXPECT_TRUE(upload(kProject, "other"));
}

// An upload past --max-code-revisions removes the oldest revisions, their
// records and packages, but not one a queued task was queued with: that one
// goes at an upload after the task has ended. A retry of a task whose
// revision is gone is refused; the removal lasts past a restart.
TEST(ServiceRevisionsTest, OldRevisionsGoOnceNoTaskNeedsThem) {
  namespace fs = std::filesystem;
  testing::TempDir dir;
  runner::ImageStore images(dir.path() + "/images");
  runner::Runc runc;
  auto store = std::move(*store::rocks::Open({dir.path() + "/db"}));
  FakeClock clock;
  ServiceOptions o{dir.path(), 0};  // no slots: tasks stay queued
  o.run_schedules = false;
  o.max_code_revisions = 2;
  auto svc = std::make_unique<Service>(*store, clock, images, runc, o);
  ASSERT_TRUE(svc->Recover());
  fs::path src = fs::path(dir.path()) / "src";
  fs::create_directories(src);
  auto upload = [&](int n) {
    std::ofstream(src / "run.sh") << "echo " << n << "\n";
    auto zip = runner::ZipDirectory(src.string());
    EXPECT_TRUE(zip);
    worker::Code c;
    c.name = "app";
    c.command = "sh run.sh";
    auto code = svc->PutCode(kProject, c, *zip);
    EXPECT_TRUE(code) << code.error().message();
    return *code;
  };
  auto package = [&](const worker::Code& c, int64_t rev) {
    return fs::path(dir.path()) / "codes" / c.id / (std::to_string(rev) + ".zip");
  };
  auto revs = [&](const worker::Code& c) {
    std::vector<int64_t> out;
    auto all = svc->Revisions(kProject, c.id, 0, 100);
    EXPECT_TRUE(all);
    for (const auto& r : *all) out.push_back(r.rev);
    return out;
  };
  worker::Code c = upload(1);
  NewTask n;
  n.code_name = "app";
  std::string pinned = svc->QueueTasks(kProject, {n})->at(0);  // runs revision 1
  upload(2);
  std::string ended = svc->QueueTasks(kProject, {n})->at(0);  // revision 2
  ASSERT_TRUE(svc->Cancel(kProject, ended));
  upload(3);
  EXPECT_EQ(revs(c), (std::vector<int64_t>{3, 2, 1}));  // 1 is past the two kept but queued
  upload(4);
  // Revision 1 is still needed by its queued task; 2 has no task left.
  EXPECT_EQ(revs(c), (std::vector<int64_t>{4, 3, 1}));
  EXPECT_TRUE(fs::exists(package(c, 1)));
  EXPECT_FALSE(fs::exists(package(c, 2)));
  EXPECT_EQ(svc->Download(kProject, c.id, 2).error().code(), ErrorCode::kNotFound);
  auto retry = svc->Retry(kProject, ended, 0);
  ASSERT_FALSE(retry);
  EXPECT_EQ(retry.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(svc->GetTask(kProject, pinned)->code_rev, 1);
  ASSERT_TRUE(svc->Cancel(kProject, pinned));
  upload(5);
  EXPECT_EQ(revs(c), (std::vector<int64_t>{5, 4}));
  EXPECT_FALSE(fs::exists(package(c, 1)));
  EXPECT_FALSE(fs::exists(package(c, 3)));
  EXPECT_TRUE(fs::exists(package(c, 4)));
  svc = std::make_unique<Service>(*store, clock, images, runc, o);
  ASSERT_TRUE(svc->Recover());
  EXPECT_EQ(revs(c), (std::vector<int64_t>{5, 4}));
  EXPECT_TRUE(svc->Download(kProject, c.id, 4));
}

// Lists are newest first, paged, filtered by code name, label, state and
// creation time; stats count a code's tasks by state. Both keep to their
// project and forget expired tasks.
TEST(ServiceListTest, ListsAreNewestFirstPagedAndFiltered) {
  testing::TempDir dir;
  runner::ImageStore images(dir.path() + "/images");
  runner::Runc runc;
  auto store = std::move(*store::rocks::Open({dir.path() + "/db"}));
  FakeClock clock;
  ServiceOptions o{dir.path(), 0};
  o.run_schedules = false;
  o.task_retention = std::chrono::hours(1);
  auto svc = std::make_unique<Service>(*store, clock, images, runc, o);
  ASSERT_TRUE(svc->Recover());
  constexpr char kOther[] = "fedcba9876543210fedcba98";
  for (const char* name : {"a", "b"})
    ASSERT_TRUE(svc->PutCode(kProject, BusyboxCode(name, "true")));
  ASSERT_TRUE(svc->PutCode(kOther, BusyboxCode("a", "true")));
  std::vector<std::string> a, b;  // oldest first
  TimeMs start = clock.NowMs();
  for (int i = 0; i < 5; ++i) {
    NewTask n;
    n.code_name = "a";
    n.label = i % 2 ? "odd" : "even";
    a.push_back(svc->QueueTasks(kProject, {n, n})->at(0));  // two in the same millisecond
    n.code_name = "b";
    b.push_back(svc->QueueTasks(kProject, {n})->at(0));
    clock.Advance(1000);
  }
  ASSERT_TRUE(svc->QueueTasks(kOther, {NewTask{.code_name = "a"}}));
  ASSERT_TRUE(svc->Cancel(kProject, a[1]));
  auto ids = [&](TaskFilter f) {
    std::vector<std::string> out;
    auto listed = svc->ListTasks(kProject, f);
    EXPECT_TRUE(listed) << listed.error().message();
    for (const auto& t : *listed) out.push_back(t.id);
    return out;
  };
  auto all = ids({});
  ASSERT_EQ(all.size(), 15u);
  EXPECT_EQ(all[0], b[4]);
  EXPECT_EQ(all[14], a[0]);
  TaskFilter f;
  f.per_page = 4;
  f.page = 1;
  EXPECT_EQ(ids(f), std::vector<std::string>(all.begin() + 4, all.begin() + 8));
  f.page = 4;
  EXPECT_TRUE(ids(f).empty());
  f = {};
  f.code_name = "b";
  EXPECT_EQ(ids(f), (std::vector<std::string>{b[4], b[3], b[2], b[1], b[0]}));
  f.label = "odd";
  EXPECT_EQ(ids(f), (std::vector<std::string>{b[3], b[1]}));
  f = {};
  f.code_name = "a";
  f.states = {TaskState::kCancelled};
  EXPECT_EQ(ids(f), (std::vector<std::string>{a[1]}));
  f = {};
  f.from = start + 1000;
  f.to = start + 2000;
  EXPECT_EQ(ids(f).size(), 6u);
  f.code_name = "nope";
  EXPECT_TRUE(ids(f).empty());
  auto code_a = svc->GetCode(kProject, "a");
  auto stats = svc->Stats(kProject, code_a->id, 0, clock.NowMs());
  ASSERT_TRUE(stats);
  EXPECT_EQ((*stats)[static_cast<size_t>(TaskState::kQueued)], 9);
  EXPECT_EQ((*stats)[static_cast<size_t>(TaskState::kCancelled)], 1);
  clock.Advance(2 * 3600'000);
  EXPECT_EQ(svc->ExpireTasks(), 1u);
  EXPECT_EQ(ids({}).size(), 14u);
  stats = svc->Stats(kProject, code_a->id, 0, clock.NowMs());
  EXPECT_EQ((*stats)[static_cast<size_t>(TaskState::kCancelled)], 0);
  svc = std::make_unique<Service>(*store, clock, images, runc, o);  // and after a restart
  ASSERT_TRUE(svc->Recover());
  std::erase(all, a[1]);
  EXPECT_EQ(ids({}), all);
}

// A project has at most max_queued_tasks_per_project queued tasks: a batch
// that would pass it is refused whole (403), and so is a retry; another
// project's are its own, and room comes back as tasks leave the queue.
TEST(ServiceLimitTest, AProjectQueuesAtMostItsLimit) {
  testing::TempDir dir;
  runner::ImageStore images(dir.path() + "/images");
  runner::Runc runc;
  auto store = std::move(*store::rocks::Open({dir.path() + "/db"}));
  ServiceOptions o{dir.path(), 0};
  o.run_schedules = false;
  o.max_queued_tasks_per_project = 3;
  Service svc(*store, *SystemClock::Get(), images, runc, o);
  ASSERT_TRUE(svc.Recover());
  constexpr char kOther[] = "fedcba9876543210fedcba98";
  ASSERT_TRUE(svc.PutCode(kProject, BusyboxCode("c", "true")));
  ASSERT_TRUE(svc.PutCode(kOther, BusyboxCode("c", "true")));
  NewTask n;
  n.code_name = "c";
  auto two = svc.QueueTasks(kProject, {n, n});
  ASSERT_TRUE(two);
  auto refused = svc.QueueTasks(kProject, {n, n});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(svc.ListTasks(kProject, {})->size(), 2u);  // all or nothing
  ASSERT_TRUE(svc.QueueTasks(kOther, {n, n, n}));
  ASSERT_TRUE(svc.QueueTasks(kProject, {n}));
  ASSERT_TRUE(svc.Cancel(kProject, two->at(0)));
  auto retry = svc.Retry(kProject, two->at(0), 0);  // the cancel made room for one
  ASSERT_TRUE(retry) << retry.error().message();
  EXPECT_FALSE(svc.Retry(kProject, two->at(0), 0));
}

// A zip code is unpacked into the task dir on every run: one that unpacks
// to more than the code's disk limit is refused at upload.
TEST(ServiceCodeTest, AZipThatUnpacksPastTheDiskLimitIsRefused) {
  testing::TempDir dir;
  runner::ImageStore images(dir.path() + "/images");
  runner::Runc runc;
  auto store = std::move(*store::rocks::Open({dir.path() + "/db"}));
  ServiceOptions o{dir.path(), 0};
  o.run_schedules = false;
  Service svc(*store, *SystemClock::Get(), images, runc, o);
  ASSERT_TRUE(svc.Recover());
  std::filesystem::create_directories(dir.path() + "/pkg");
  std::ofstream(dir.path() + "/pkg/big") << std::string(17 << 20, '\0');
  auto zip = runner::ZipDirectory(dir.path() + "/pkg");
  ASSERT_TRUE(zip);
  worker::Code c;
  c.name = "big";
  c.command = "true";
  c.disk_mb = 16;
  auto refused = svc.PutCode(kProject, c, *zip);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().message().find("more than the code's disk limit"), std::string::npos)
      << refused.error().message();
  c.disk_mb = 32;
  EXPECT_TRUE(svc.PutCode(kProject, c, *zip));
}

// A package is refused (503) when writing it would leave the data dir's
// disk with less than the reserve free; a code without one is not.
TEST(ServiceCodeTest, APackageIsRefusedWhenTheDiskIsNearlyFull) {
  testing::TempDir dir;
  runner::ImageStore images(dir.path() + "/images");
  runner::Runc runc;
  auto store = std::move(*store::rocks::Open({dir.path() + "/db"}));
  ServiceOptions o{dir.path(), 0};
  o.run_schedules = false;
  o.min_free_disk_bytes = int64_t{1} << 62;  // more than any disk has free
  Service svc(*store, *SystemClock::Get(), images, runc, o);
  ASSERT_TRUE(svc.Recover());
  std::filesystem::create_directories(dir.path() + "/pkg");
  std::ofstream(dir.path() + "/pkg/run.sh") << "echo hi\n";
  auto zip = runner::ZipDirectory(dir.path() + "/pkg");
  ASSERT_TRUE(zip);
  worker::Code c;
  c.name = "zipped";
  c.command = "sh run.sh";
  auto refused = svc.PutCode(kProject, c, *zip);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(refused.error().message().find("too little free space"), std::string::npos)
      << refused.error().message();
  EXPECT_FALSE(svc.GetCode(kProject, "zipped"));
  std::string codes = dir.path() + "/codes";  // no upload-*.tmp left
  EXPECT_TRUE(!std::filesystem::exists(codes) || std::filesystem::is_empty(codes));
  worker::Code image;
  image.name = "image";
  image.image = "busybox";
  image.command = "true";
  EXPECT_TRUE(svc.PutCode(kProject, image));
}

// A payload is a record of its own, read when it is asked for: the task's
// record (and the service's memory) holds none. Retries copy it, expiry
// removes it, and records of an older Kiln that held it are split at start.
TEST(ServicePayloadTest, PayloadsAreRecordsOfTheirOwn) {
  testing::TempDir dir;
  runner::ImageStore images(dir.path() + "/images");
  runner::Runc runc;
  auto store = std::move(*store::rocks::Open({dir.path() + "/db"}));
  FakeClock clock;
  ServiceOptions o{dir.path(), 0};
  o.run_schedules = false;
  o.task_retention = std::chrono::hours(24);
  auto svc = std::make_unique<Service>(*store, clock, images, runc, o);
  ASSERT_TRUE(svc->Recover());
  ASSERT_TRUE(svc->PutCode(kProject, BusyboxCode("c", "true")));
  NewTask n;
  n.code_name = "c";
  n.payload = std::string(60000, 'p');
  NewTask empty = n;
  empty.payload.clear();
  auto ids = *svc->QueueTasks(kProject, {n, empty});
  auto recorded = [&](const std::string& id) {
    return DecodeTask(*store->GetWorkerRecord("task/" + id));
  };
  EXPECT_EQ(*store->GetWorkerRecord("payload/" + ids[0]), n.payload);
  EXPECT_EQ(recorded(ids[0])->payload, "");
  EXPECT_EQ(store->GetWorkerRecord("payload/" + ids[1]).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(svc->GetTask(kProject, ids[0])->payload, n.payload);
  EXPECT_EQ(svc->GetTask(kProject, ids[1])->payload, "");
  auto listed = svc->ListTasks(kProject, {});
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 2u);
  for (const auto& t : *listed) EXPECT_EQ(t.payload, t.id == ids[0] ? n.payload : "");
  EXPECT_EQ(svc->Watch(kProject, ids[0], std::make_shared<std::function<void()>>([] {}))->payload,
            n.payload);

  ASSERT_TRUE(svc->Cancel(kProject, ids[0]));
  EXPECT_EQ(svc->GetTask(kProject, ids[0])->payload, n.payload);  // a later write keeps it
  auto again = svc->Retry(kProject, ids[0], 0);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(svc->GetTask(kProject, *again)->payload, n.payload);
  EXPECT_EQ(*store->GetWorkerRecord("payload/" + *again), n.payload);

  // A record as an older Kiln wrote it, with its payload inside.
  Task old = *svc->GetTask(kProject, ids[1]);
  old.payload = "{\"old\":1}";
  ASSERT_TRUE(store->PutWorkerRecord("task/" + old.id, EncodeTask(old)));
  svc = std::make_unique<Service>(*store, clock, images, runc, o);
  ASSERT_TRUE(svc->Recover());
  EXPECT_EQ(*store->GetWorkerRecord("payload/" + old.id), old.payload);
  EXPECT_EQ(recorded(old.id)->payload, "");
  EXPECT_EQ(recorded(old.id)->state, TaskState::kQueued);
  EXPECT_EQ(svc->GetTask(kProject, old.id)->payload, old.payload);

  clock.Advance(25 * 3600'000);
  EXPECT_EQ(svc->ExpireTasks(), 1u);  // the cancelled one
  EXPECT_EQ(store->GetWorkerRecord("payload/" + ids[0]).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(*store->GetWorkerRecord("payload/" + *again), n.payload);  // still queued
}

}  // namespace
}  // namespace kiln::worker
