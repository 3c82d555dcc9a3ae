// Queue alerts (IronMQ v2 semantics, iron-api.md §2.2): when a queue's size
// crosses a trigger, a notice is posted to another queue. Pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "store/records.h"

namespace kiln::mq {

inline constexpr size_t kMaxAlerts = 5;
inline constexpr int64_t kMaxSnooze = 30 * 86400;  // seconds; multiplied out to ms later

// Whether `a` fires when the size goes from `before` to `after`: fixed asc
// when it rises to the trigger or past it, fixed desc when it falls to it or
// below; progressive at each multiple of the trigger crossed that way.
bool Crosses(const store::Alert& a, uint64_t before, uint64_t after);

// The JSON text posted to the alert's queue.
std::string AlertNotice(const store::Alert& a, const std::string& source_queue, uint64_t size,
                        TimeMs now);

// Fields and ranges of one alert on queue `queue_name`. InvalidArgument.
Result<void> ValidateAlert(const store::Alert& a, const std::string& queue_name);

// Adds `fresh` (giving each an id) to `have`: at most kMaxAlerts in all, and
// none may repeat the type, direction and trigger of another.
Result<void> AddAlerts(std::vector<store::Alert>& have, std::vector<store::Alert> fresh,
                       const std::string& queue_name);

}  // namespace kiln::mq
