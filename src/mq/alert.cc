#include "mq/alert.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "base/ids.h"
#include "base/time_format.h"
#include "mq/engine.h"  // ValidateQueueName

namespace kiln::mq {

bool Crosses(const store::Alert& a, uint64_t before, uint64_t after) {
  if (a.trigger <= 0 || before == after) return false;
  uint64_t t = static_cast<uint64_t>(a.trigger);
  bool up = after > before;
  if (a.direction == "asc" && !up) return false;
  if (a.direction == "desc" && up) return false;
  if (a.type == "fixed") return up ? before < t && after >= t : before > t && after <= t;
  // Progressive: a multiple m*t (m >= 1) in (before, after] going up, or in
  // [after, before) going down.
  if (up) return after / t > before / t;
  uint64_t lowest = std::max<uint64_t>((after + t - 1) / t, 1);
  return (before - 1) / t >= lowest;
}

std::string AlertNotice(const store::Alert& a, const std::string& source_queue, uint64_t size,
                        TimeMs now) {
  std::string when = FormatRfc3339(now);
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.StartObject();
  w.Key("source_queue");
  w.String(source_queue.c_str(), static_cast<rapidjson::SizeType>(source_queue.size()));
  w.Key("queue_size");
  w.Uint64(size);
  w.Key("alert_id");
  w.String(a.id.c_str());
  w.Key("alert_type");
  w.String(a.type.c_str());
  w.Key("alert_direction");
  w.String(a.direction.c_str());
  w.Key("alert_trigger");
  w.Int64(a.trigger);
  w.Key("created_at");
  w.String(when.c_str());
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize());
}

Result<void> ValidateAlert(const store::Alert& a, const std::string& queue_name) {
  if (a.type != "fixed" && a.type != "progressive")
    return Fail(Error::InvalidArgument("alert type must be fixed or progressive"));
  if (a.direction != "asc" && a.direction != "desc")
    return Fail(Error::InvalidArgument("alert direction must be asc or desc"));
  if (a.trigger < 1) return Fail(Error::InvalidArgument("alert trigger must be 1 or more"));
  if (a.snooze < 0 || a.snooze > kMaxSnooze)
    return Fail(Error::InvalidArgument("alert snooze must be between 0 and " +
                                       std::to_string(kMaxSnooze) + " seconds"));
  if (a.queue.empty()) return Fail(Error::InvalidArgument("alert queue is required"));
  if (auto v = ValidateQueueName(a.queue); !v)
    return Fail(Error::InvalidArgument("alert queue: " + v.error().message()));
  if (a.queue == queue_name)
    return Fail(Error::InvalidArgument("An alert cannot post to its own queue"));
  return Ok();
}

Result<void> AddAlerts(std::vector<store::Alert>& have, std::vector<store::Alert> fresh,
                       const std::string& queue_name) {
  for (auto& a : fresh) {
    if (auto v = ValidateAlert(a, queue_name); !v) return v;
    for (const auto& h : have)
      if (h.type == a.type && h.direction == a.direction && h.trigger == a.trigger)
        return Fail(
            Error::InvalidArgument("At least one new alert duplicates current queue alerts."));
    if (have.size() >= kMaxAlerts)
      return Fail(Error::InvalidArgument("A queue can have at most 5 alerts"));
    a.id = RandomHex(12);
    have.push_back(std::move(a));
  }
  return Ok();
}

}  // namespace kiln::mq
