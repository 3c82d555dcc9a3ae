// Carries push deliveries: http:// and https:// through the pooled HTTP
// client; ironmq:// (fan-out into another queue) and ironworker:// (a task
// of a code, the body its payload) in-process when they name this server,
// otherwise as an IronMQ v3 post or IronWorker v2 task to the other server.
// Thread-safe: Send may be called from any thread.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "access/access.h"
#include "http/client.h"
#include "mq/engine.h"
#include "worker/service.h"

namespace kiln::server {

class PushTransport final : public mq::PushTransport {
 public:
  // `self` is "host:port" of this server, to recognise ironmq:// urls naming it.
  // `worker`: for ironworker:// subscribers naming this server (null: none).
  PushTransport(mq::Engine& engine, access::Access& access, worker::Service* worker,
                http::ClientOptions options, std::string self);
  void Send(mq::PushRequest request, std::function<void(int, std::string)> done) override;

 private:
  // The project a subscriber url names (its own, or the queue's), or 401:
  // a url naming another project needs a token good for it.
  std::optional<std::string> ProjectFor(const mq::IronMqUrl& u, const mq::PushRequest& request);
  void SendToWorker(mq::PushRequest request, std::function<void(int, std::string)> done);

  mq::Engine& engine_;
  access::Access& access_;
  worker::Service* worker_;
  http::Client client_;
  std::string self_;
};

}  // namespace kiln::server
