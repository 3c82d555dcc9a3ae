#include "store/rocks/rocks_store.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <thread>

#include "tests/support/temp_dir.h"

namespace kiln::store::rocks {
namespace {

constexpr uint64_t kQid = 7;

// Bodies of many sizes, some spanning RocksDB's 32 KiB log blocks.
std::string Body(uint64_t id) { return std::string(1 + id * 7919 % 60000, char('a' + id % 26)); }

Result<void> CommitAndWait(Store& s, MessageBatch b) {
  std::promise<Result<void>> p;
  s.Commit(
      std::move(b), [&](Result<void> r) { p.set_value(std::move(r)); }, Store::Writer::kCommitter);
  return p.get_future().get();
}

// Commits a put of message `id` (with Body(id)) and waits for it.
Result<void> PutAndWait(Store& s, uint64_t id, TimeMs expires_at = 0) {
  MessageBatch b;
  b.Put(kQid, MessageState{.id = id, .expires_at = expires_at}, Body(id));
  return CommitAndWait(s, std::move(b));
}

// Appends an unsynced delete of message `id`.
void AppendDelete(Store& s, uint64_t id) {
  MessageBatch d;
  d.Delete(kQid, id, false);
  s.Append(std::move(d));
}

// Runs `work` on a store over `dir` in a child process that then ends
// with _exit, without closing the store or flushing anything: to the
// store, a kill -9. `work` returns the child's exit code; expects 0.
void InAChildThatDies(const std::string& dir, const std::function<int(Store&)>& work) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto s = Open({dir});
    _exit(s ? work(**s) : 2);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

std::map<uint64_t, MessageState> ReadAll(Store& s) {
  std::map<uint64_t, MessageState> out;
  auto r = s.ForEachMessage([&](uint64_t qid, const MessageState& m) {
    EXPECT_EQ(qid, kQid);
    out[m.id] = m;
  });
  EXPECT_TRUE(r) << r.error().message();
  return out;
}

// Whether the last 4 KiB of the file are zeros.
bool EndsInZeros(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  in.seekg(-4096, std::ios::end);
  std::string tail(4096, '\1');
  in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
  return in && tail.find_first_not_of('\0') == std::string::npos;
}

// The process dies without closing the store, as with kill -9: the log has
// zeros written ahead of its end, and every committed batch must replay.
// Sets (or, with `to` empty, reads) a key of the data dir's default column
// family, as another Kiln (or a damaged disk) would have left it, with
// RocksDB itself.
std::string RawKey(const std::string& dir, const std::string& key, const std::string& to = "") {
  std::vector<std::string> names;
  EXPECT_TRUE(rocksdb::DB::ListColumnFamilies({}, dir, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const auto& n : names) cfs.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  EXPECT_TRUE(rocksdb::DB::Open({}, dir, cfs, &handles, &db).ok());
  std::string v;
  if (to.empty())
    db->Get({}, key, &v);
  else
    EXPECT_TRUE(db->Put({}, key, to).ok());
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  delete db;
  return v;
}

std::string FormatVersion(const std::string& dir, const std::string& to = "") {
  return RawKey(dir, "format_version", to);
}

// A damaged next queue id stops the start: starting again at 1 would give
// a new queue the id, and so the messages, of an old one.
TEST(RocksStoreTest, ADamagedNextQueueIdIsRefused) {
  testing::TempDir dir;
  {
    auto store = Open({dir.path()});
    ASSERT_TRUE(store);
    ASSERT_TRUE((*store)->NextQueueId());
  }
  RawKey(dir.path(), "next_qid", "abc");
  auto refused = Open({dir.path()});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("next queue id"), std::string::npos);
}

// A store of version 1 (task payloads inside task records) opens and is
// raised to 2, so that a Kiln that reads only 1 refuses it; others are refused.
TEST(RocksStoreTest, AnOlderFormatIsRaisedAndAnUnknownOneRefused) {
  testing::TempDir dir;
  ASSERT_TRUE(Open({dir.path()}));
  EXPECT_EQ(FormatVersion(dir.path()), "2");
  FormatVersion(dir.path(), "1");
  ASSERT_TRUE(Open({dir.path()}));
  EXPECT_EQ(FormatVersion(dir.path()), "2");
  FormatVersion(dir.path(), "3");
  auto refused = Open({dir.path()});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("format version 3"), std::string::npos)
      << refused.error().message();
}

TEST(RocksStoreTest, ACrashLosesNoCommittedMessageInAPrefilledLog) {
  testing::TempDir dir;
  constexpr uint64_t kMessages = 300;  // ~9 MB: the log crosses several prefill chunks
  InAChildThatDies(dir.path(), [](Store& s) {
    for (uint64_t id = 1; id <= kMessages; ++id) {
      if (!PutAndWait(s, id, static_cast<TimeMs>(1000 + id))) return 3;
      if (id % 10 == 0) AppendDelete(s, id - 5);  // a later commit carries it to disk
    }
    return 0;
  });

  bool prefilled = false;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().extension() == ".log" && e.file_size() > 4096) prefilled |= EndsInZeros(e.path());
  }
  EXPECT_TRUE(prefilled) << "the live log should end in zeros written ahead of it";

  auto s = Open({dir.path()});
  ASSERT_TRUE(s) << s.error().message();
  auto all = ReadAll(**s);
  for (uint64_t id = 1; id <= kMessages; ++id) {
    bool deleted =
        id % 10 == 5 && id + 5 < kMessages;  // the last delete may not have ridden a commit
    if (id % 10 == 5 && !deleted) continue;
    ASSERT_EQ(all.count(id), deleted ? 0u : 1u) << "message " << id;
    if (deleted) continue;
    EXPECT_EQ(all[id].expires_at, static_cast<TimeMs>(1000 + id));
    auto body = (*s)->GetBody(kQid, id);
    ASSERT_TRUE(body) << body.error().message();
    EXPECT_EQ(*body, Body(id)) << "message " << id;
  }
}

// Appends are not written on the caller's thread: the next Commit carries
// them, and without one the committer writes them within milliseconds. Both
// reach the log before a kill -9 (no close) that comes a while later.
TEST(RocksStoreTest, AppendsRideTheNextCommitOrGoOnTheirOwnSoon) {
  testing::TempDir dir;
  InAChildThatDies(dir.path(), [](Store& s) {
    for (uint64_t id = 1; id <= 3; ++id)
      if (!PutAndWait(s, id)) return 3;
    AppendDelete(s, 1);
    if (!PutAndWait(s, 4)) return 3;  // carries the delete of 1
    AppendDelete(s, 2);               // no Commit follows: the committer writes it
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    return 0;
  });
  auto s = Open({dir.path()});
  ASSERT_TRUE(s) << s.error().message();
  auto all = ReadAll(**s);
  EXPECT_EQ(all.count(1), 0u);
  EXPECT_EQ(all.count(2), 0u);
  EXPECT_EQ(all.count(3), 1u);
  EXPECT_EQ(all.count(4), 1u);
}

// A Commit whose caller writes it is written and synced on that thread,
// with the Appends queued before it, before Commit returns: a kill -9 right
// after loses none of it.
TEST(RocksStoreTest, ACommitTheCallerWritesIsDurableWhenCommitReturns) {
  testing::TempDir dir;
  InAChildThatDies(dir.path(), [](Store& s) {
    for (uint64_t id = 1; id <= 2; ++id)
      if (!PutAndWait(s, id)) return 3;
    AppendDelete(s, 1);
    MessageBatch b3;
    b3.Put(kQid, MessageState{.id = 3}, Body(3));
    bool written = false;
    std::thread::id on;
    s.Commit(
        std::move(b3),
        [&](Result<void> r) {
          written = static_cast<bool>(r);
          on = std::this_thread::get_id();
        },
        Store::Writer::kCaller);
    if (!written) return 4;
    if (on != std::this_thread::get_id()) return 5;
    return 0;
  });
  auto s = Open({dir.path()});
  ASSERT_TRUE(s) << s.error().message();
  auto all = ReadAll(**s);
  EXPECT_EQ(all.count(1), 0u);
  EXPECT_EQ(all.count(2), 1u);
  EXPECT_EQ(all.count(3), 1u);
}

// A nearly full disk refuses posts before RocksDB meets it (a write that
// failed there would leave the store refusing writes until a restart), and
// they are taken again once there is room, without a restart.
TEST(RocksStoreTest, ANearlyFullDiskRefusesPostsUntilThereIsRoomAgain) {
  testing::TempDir dir;
  if (mount("kiln-test", dir.path().c_str(), "tmpfs", 0, "size=96m") != 0)
    GTEST_SKIP() << "needs root to mount a small tmpfs: " << std::strerror(errno);
  struct Unmount {
    std::string dir;
    ~Unmount() { umount2(dir.c_str(), MNT_DETACH); }
  } unmount{dir.path()};
  std::string db = dir.path() + "/db", filler = dir.path() + "/filler";
  {
    auto s = Open({.dir = db, .min_free_bytes = 16 << 20});
    ASSERT_TRUE(s) << s.error().message();
    ASSERT_TRUE(PutAndWait(**s, 1));
    struct statvfs fs;
    ASSERT_EQ(statvfs(dir.path().c_str(), &fs), 0);
    int64_t avail = static_cast<int64_t>(fs.f_bavail) * static_cast<int64_t>(fs.f_frsize);
    {
      std::ofstream f(filler, std::ios::binary);
      std::string mb(1 << 20, 'x');
      for (int64_t left = avail - (8 << 20); left > 0; left -= 1 << 20)
        f.write(mb.data(), static_cast<std::streamsize>(mb.size()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150));  // past the cached look
    auto refused = PutAndWait(**s, 2);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code(), ErrorCode::kUnavailable);
    EXPECT_NE(refused.error().message().find("less than 16 MB free"), std::string::npos);
    // What frees space is taken all the same: deleting a message, a queue.
    MessageBatch removes;
    removes.Delete(kQid, 1, false);
    removes.DropQueue(kQid + 1);
    removes.SetTotal(kQid, 7);  // the totals that go with them, and at a clean stop
    ASSERT_TRUE(CommitAndWait(**s, std::move(removes)));
    std::filesystem::remove(filler);
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    ASSERT_TRUE(PutAndWait(**s, 3));
  }
  auto s = Open({db});
  ASSERT_TRUE(s) << s.error().message();
  auto all = ReadAll(**s);
  EXPECT_EQ(all.count(1), 0u);  // deleted while the disk was full
  EXPECT_EQ(all.count(2), 0u);
  EXPECT_EQ(all.count(3), 1u);
}

// A clean close trims the zeros: no log is left ending in a prefill chunk,
// and the data is all there after reopening.
TEST(RocksStoreTest, ACleanCloseLeavesNoZerosBehind) {
  testing::TempDir dir;
  {
    auto s = Open({dir.path()});
    ASSERT_TRUE(s) << s.error().message();
    for (uint64_t id = 1; id <= 200; ++id) ASSERT_TRUE(PutAndWait(**s, id));
  }
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().extension() == ".log" && e.file_size() > 4096) {
      EXPECT_FALSE(EndsInZeros(e.path())) << e.path() << " keeps its zeros after a clean close";
    }
  }
  auto s = Open({dir.path()});
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(ReadAll(**s).size(), 200u);
  auto body = (*s)->GetBody(kQid, 123);
  ASSERT_TRUE(body);
  EXPECT_EQ(*body, Body(123));
}

// Inserts use a per-queue hint (QueuePrefix); range deletions must not
// share it. Writes, clears and drops of one queue, interleaved, stay right.
TEST(RocksStoreTest, ClearsAndDropsBetweenWritesOfTheSameQueue) {
  testing::TempDir dir;
  auto s = Open({dir.path()});
  ASSERT_TRUE(s) << s.error().message();
  uint64_t id = 1;
  auto post = [&](uint64_t qid, int n) {
    MessageBatch b;
    for (int i = 0; i < n; ++i, ++id) b.Put(qid, MessageState{.id = id}, Body(id));
    ASSERT_TRUE(CommitAndWait(**s, std::move(b)));
  };
  for (int round = 0; round < 20; ++round) {
    post(kQid, 5);
    post(kQid + 1, 3);
    MessageBatch c;
    c.Clear(kQid);
    (*s)->Append(std::move(c));
    post(kQid, 2);  // after the clear: these stay
    MessageBatch d;
    d.Delete(kQid, id - 1, false);  // one of them goes again
    (*s)->Append(std::move(d));
  }
  MessageBatch drop;
  drop.DropQueue(kQid + 1);
  ASSERT_TRUE(CommitAndWait(**s, std::move(drop)));
  s->reset();
  s = Open({dir.path()});
  ASSERT_TRUE(s) << s.error().message();
  std::map<uint64_t, std::vector<uint64_t>> by_queue;
  ASSERT_TRUE((*s)->ForEachMessage(
      [&](uint64_t qid, const MessageState& m) { by_queue[qid].push_back(m.id); }));
  EXPECT_EQ(by_queue.count(kQid + 1), 0u);
  ASSERT_EQ(by_queue[kQid].size(), 1u);  // only the last round's survivor of the clear
  EXPECT_EQ(by_queue[kQid][0], id - 2);
}

}  // namespace
}  // namespace kiln::store::rocks
