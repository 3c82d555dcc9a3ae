// A store that hands every call to a real one: tests derive from it and
// override the calls they make fail, as a full or broken disk would.
#pragma once

#include <functional>
#include <future>
#include <vector>

#include "store/store.h"

namespace kiln::testing {

class ForwardingStore : public store::Store {
 public:
  explicit ForwardingStore(store::Store& real) : real_(real) {}

  Result<void> PutWorkerRecords(const WorkerRecords& records) override {
    return real_.PutWorkerRecords(records);
  }
  Result<void> DeleteWorkerRecords(const std::vector<std::string>& keys) override {
    return real_.DeleteWorkerRecords(keys);
  }
  void Commit(store::MessageBatch b, Done d, Writer w) override {
    real_.Commit(std::move(b), std::move(d), w);
  }
  void Append(store::MessageBatch b) override { real_.Append(std::move(b)); }
  Result<std::string> GetBody(uint64_t q, uint64_t id) override { return real_.GetBody(q, id); }
  Result<void> PutQueue(const store::QueueRecord& q) override { return real_.PutQueue(q); }
  Result<uint64_t> NextQueueId() override { return real_.NextQueueId(); }
  Result<uint64_t> MessageIdFloor() override { return real_.MessageIdFloor(); }
  Result<void> SetMessageIdFloor(uint64_t floor) override { return real_.SetMessageIdFloor(floor); }
  Result<void> ForEachQueue(
      const std::function<void(const store::QueueRecord&, uint64_t)>& fn) override {
    return real_.ForEachQueue(fn);
  }
  Result<void> ForEachMessage(
      const std::function<void(uint64_t, const store::MessageState&)>& fn) override {
    return real_.ForEachMessage(fn);
  }
  Result<void> ForEachPlan(
      const std::function<void(uint64_t, uint64_t, std::string_view)>& fn) override {
    return real_.ForEachPlan(fn);
  }
  Result<std::string> GetWorkerRecord(const std::string& key) override {
    return real_.GetWorkerRecord(key);
  }
  Result<void> ForEachWorkerRecord(
      const std::string& prefix,
      const std::function<void(std::string_view, std::string_view)>& fn) override {
    return real_.ForEachWorkerRecord(prefix, fn);
  }
  Result<void> PutProject(const store::ProjectRecord& p) override { return real_.PutProject(p); }
  Result<std::vector<store::ProjectRecord>> ListProjects() override { return real_.ListProjects(); }
  Result<void> PutToken(const store::TokenRecord& t) override { return real_.PutToken(t); }
  Result<store::TokenRecord> GetTokenByHash(const std::string& h) override {
    return real_.GetTokenByHash(h);
  }
  Result<std::vector<store::TokenRecord>> ListTokens() override { return real_.ListTokens(); }
  Result<void> DeleteToken(const std::string& id) override { return real_.DeleteToken(id); }

 protected:
  store::Store& real_;
};

// While `hold` is set, Commit writes its batch but holds back the caller's
// completion until the test runs it (from `held`): what a test needs to
// land something else between a write and its completion.
class LateCompletions : public ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  bool hold = false;
  std::vector<std::function<void()>> held;
  void Commit(store::MessageBatch b, Done d, Writer w) override {
    if (!hold) return real_.Commit(std::move(b), std::move(d), w);
    std::promise<Result<void>> written;
    real_.Commit(
        std::move(b), [&](Result<void> r) { written.set_value(std::move(r)); }, w);
    auto r = written.get_future().get();
    held.push_back([d = std::move(d), r]() mutable { d(std::move(r)); });
  }
};

}  // namespace kiln::testing
