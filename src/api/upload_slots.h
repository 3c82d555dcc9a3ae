// How many code uploads of one project may be under way at once (waiting
// for the upload thread or on it, api/worker_routes.cc): past that, the
// upload is answered 503, which the Iron clients retry after a pause
// (iron-api.md §1.4), so that one project's burst of uploads waits behind
// itself instead of making every other project's upload wait behind it.
// A slot is taken as the upload's head comes (ServerOptions::check_body,
// server/app.cc), before its body is read, so that a project's burst does
// not make the server hold every body of it; an upload whose whole request
// came at once takes its slot in the handler. All projects together hold
// at most `total` slots, so that the bodies held while they wait for the
// upload thread (each up to --max-upload-mb) stay bounded however many
// projects upload at once. Thread-safe.
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
  static constexpr int kTotal = 16;
  explicit UploadSlots(int per_project = kPerProject, int total = kTotal)
      : per_project_(per_project), total_(total) {}

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

  // A slot of `project`, or why there is none (Unavailable: 503) when the
  // project, or the server, has all its slots taken.
  Result<std::unique_ptr<Held>> Take(const std::string& project) {
    std::lock_guard lock(mu_);
    auto it = taken_.find(project);
    if (it != taken_.end() && it->second >= per_project_)
      return Fail(Error::Unavailable("this project has " + std::to_string(per_project_) +
                                     " uploads being stored already: try again shortly"));
    if (total_taken_ >= total_)
      return Fail(Error::Unavailable("the server has " + std::to_string(total_) +
                                     " uploads being stored already: try again shortly"));
    ++taken_[project];
    ++total_taken_;
    return std::make_unique<Held>(this, project);
  }

 private:
  void Give(const std::string& project) {
    std::lock_guard lock(mu_);
    auto it = taken_.find(project);
    if (it == taken_.end()) return;
    --total_taken_;
    if (--it->second <= 0) taken_.erase(it);
  }

  const int per_project_, total_;
  int total_taken_ = 0;
  std::mutex mu_;
  std::unordered_map<std::string, int> taken_;  // projects with a slot taken
};

}  // namespace kiln::api
