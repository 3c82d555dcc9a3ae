// How many code uploads of one project may be under way at once (waiting
// for the upload thread or on it, api/worker_routes.cc): past that, the
// upload is answered 503, which the Iron clients retry after a pause
// (iron-api.md §1.4), so that one project's burst of uploads waits behind
// itself instead of making every other project's upload wait behind it.
// A slot is taken as the upload's head comes (ServerOptions::check_body,
// server/app.cc), before its body is read, so that a project's burst does
// not make the server hold every body of it; an upload whose whole request
// came at once takes its slot in the handler. Thread-safe.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "base/error.h"

namespace kiln::api {

class UploadSlots {
 public:
  static constexpr int kPerProject = 2;
  explicit UploadSlots(int per_project = kPerProject) : per_project_(per_project) {}

  // Why an upload was refused a slot (503).
  Error Busy() const {
    return Error::Unavailable("this project has " + std::to_string(per_project_) +
                              " uploads being stored already: try again shortly");
  }

  // A slot of a project, given back when it goes. Must not outlive the
  // UploadSlots it came from.
  class Held {
   public:
    Held(UploadSlots* slots, std::string project) : slots_(slots), project_(std::move(project)) {}
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
    ~Held() { slots_->Give(project_); }

   private:
    UploadSlots* slots_;
    std::string project_;
  };

  // A slot of `project`, or null when the project has all its slots taken.
  std::unique_ptr<Held> Take(const std::string& project) {
    std::lock_guard lock(mu_);
    int& n = taken_[project];
    if (n >= per_project_) return nullptr;
    ++n;
    return std::make_unique<Held>(this, project);
  }

 private:
  void Give(const std::string& project) {
    std::lock_guard lock(mu_);
    auto it = taken_.find(project);
    if (it != taken_.end() && --it->second <= 0) taken_.erase(it);
  }

  const int per_project_;
  std::mutex mu_;
  std::unordered_map<std::string, int> taken_;  // projects with a slot taken
};

}  // namespace kiln::api
