// The HTTP API: registers every endpoint on a Router. mq_routes.cc holds the
// IronMQ v3 endpoints, worker_routes.cc the IronWorker v2 ones served so
// far, admin_routes.cc Kiln's project and token management,
// system_routes.cc /healthz and /version. Handlers run on the server's io
// threads (the task API's disk work on `Services::uploads` and `disk`); everything they
// touch (Engine, Access, worker::Service) is thread-safe.
#pragma once

#include <atomic>
#include <string>

#include "access/access.h"
#include "http/router.h"
#include "mq/engine.h"
#include "worker/service.h"

namespace boost::asio {
class thread_pool;
}

namespace kiln::api {

class UploadSlots;

struct Services {
  mq::Engine* engine = nullptr;
  access::Access* access = nullptr;
  const std::atomic<bool>* stopping = nullptr;  // set when the server shuts down
  worker::Service* worker = nullptr;            // null: no /2 endpoints
  // With `worker`: the threads for the task API's disk work (api/blocking.h):
  // `uploads` parses, writes and syncs code packages (up to seconds each),
  // `disk` serves the reads (tasks, the opening of a log or download), so
  // that one project's uploads never hold back another's reads. Their
  // owner joins them after the server has stopped and before the server
  // and the worker service are destroyed.
  boost::asio::thread_pool* uploads = nullptr;
  boost::asio::thread_pool* disk = nullptr;
  // With `worker`: the slots of code uploads under way (api/upload_slots.h),
  // taken at the head by the server's check_body or else by the handler.
  UploadSlots* upload_slots = nullptr;
};

void AddSystemRoutes(http::Router& r, const Services& s);
void AddMqRoutes(http::Router& r, const Services& s);
void AddAdminRoutes(http::Router& r, const Services& s);
void AddWorkerRoutes(http::Router& r, const Services& s);

inline void AddAllRoutes(http::Router& r, const Services& s) {
  AddSystemRoutes(r, s);
  AddMqRoutes(r, s);
  AddAdminRoutes(r, s);
  AddWorkerRoutes(r, s);
}

}  // namespace kiln::api
