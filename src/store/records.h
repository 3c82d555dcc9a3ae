// Persisted records of the queue service and of projects and tokens.
// Format version 1; the byte layout of each is in docs/storage-format.md.
// Plain values; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/clock.h"

namespace kiln::store {

// The version of each record's encoding ("v" of the JSON records).
inline constexpr int kFormatVersion = 1;
// The data directory's format_version: 2 since task payloads are records of
// their own. A store of version 1 is opened and raised to 2; an older Kiln
// refuses a store of 2 rather than run its tasks with empty payloads.
inline constexpr int kStoreVersion = 2;

// A push queue's subscriber: where each message of the queue is POSTed.
struct Subscriber {
  std::string name;  // unique within the queue
  std::string url;   // http://, https:// or ironmq://
  std::vector<std::pair<std::string, std::string>> headers;
};

// A queue alert: posts a notice to `queue` when the size crosses `trigger`
// (fixed) or each multiple of it (progressive), upward (asc) or downward (desc).
struct Alert {
  std::string id;
  std::string type = "fixed";     // fixed | progressive
  std::string direction = "asc";  // asc | desc
  int64_t trigger = 0;
  std::string queue;
  int64_t snooze = 0;  // seconds between two firings
};

// A queue's identity and settings. `qid` is internal and never reused, so a
// queue deleted and created again under the same name starts empty.
struct QueueRecord {
  uint64_t qid = 0;
  std::string project_id;
  std::string name;
  std::string type = "pull";            // pull | unicast | multicast
  int64_t message_timeout = 60;         // seconds
  int64_t message_expiration = 604800;  // seconds
  std::string dead_letter_queue;        // empty: none
  int64_t max_reservations = 10;
  TimeMs created_at = 0;
  // Push queues (type unicast or multicast).
  std::vector<Subscriber> subscribers;
  int64_t retries = 3;
  int64_t retries_delay = 60;  // seconds
  std::string error_queue;     // empty: none
  std::vector<Alert> alerts;   // pull queues, at most 5

  bool push() const { return type != "pull"; }
};

// The mutable part of a message, kept apart from its body so that reserve,
// touch and release rewrite 40 bytes, not the body.
struct MessageState {
  uint64_t id = 0;
  TimeMs visible_at = 0;  // delayed or reserved until then
  TimeMs expires_at = 0;  // removed after this
  uint32_t reserved_count = 0;
  uint64_t reservation = 0;  // non-zero while reserved
};

struct ProjectRecord {
  std::string id;  // 24 hex
  std::string name;
  TimeMs created_at = 0;
};

// A token is stored under the SHA-256 of its secret; the secret itself is
// shown once, when it is created.
struct TokenRecord {
  std::string id;          // public handle for list and revoke (12 hex)
  std::string hash;        // hex SHA-256 of the secret
  std::string project_id;  // empty for an admin token
  std::string name;
  bool admin = false;
  TimeMs created_at = 0;
};

}  // namespace kiln::store
