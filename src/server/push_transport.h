// Carries push deliveries: http:// and https:// through the pooled HTTP
// client; ironmq:// (fan-out into another queue) in-process when it names
// this server, otherwise as an IronMQ v3 post to the other server.
// Thread-safe: Send may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "access/access.h"
#include "http/client.h"
#include "mq/engine.h"

namespace kiln::server {

class PushTransport final : public mq::PushTransport {
 public:
  // `self` is "host:port" of this server, to recognise ironmq:// urls naming it.
  PushTransport(mq::Engine& engine, access::Access& access, http::ClientOptions options,
                std::string self);
  void Send(mq::PushRequest request, std::function<void(int, std::string)> done) override;

 private:
  mq::Engine& engine_;
  access::Access& access_;
  http::Client client_;
  std::string self_;
};

}  // namespace kiln::server
