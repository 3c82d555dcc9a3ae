#include "server/push_transport.h"

#include "api/errors.h"
#include "api/json.h"
#include "base/url.h"

namespace kiln::server {

PushTransport::PushTransport(mq::Engine& engine, access::Access& access, worker::Service* worker,
                             http::ClientOptions options, std::string self)
    : engine_(engine),
      access_(access),
      worker_(worker),
      client_(std::move(options)),
      self_(std::move(self)) {}

std::optional<std::string> PushTransport::ProjectFor(const mq::IronMqUrl& u,
                                                     const mq::PushRequest& request) {
  std::string project = u.project_id.empty() ? request.project_id : u.project_id;
  if (project == request.project_id) return project;
  // A project's token: an admin token, which reaches every project, does
  // not belong in a queue's settings, which every holder of its project's
  // token can read.
  auto p = access_.Authenticate(u.token);
  if (!p || p->admin || p->project_id != project) return std::nullopt;
  return project;
}

void PushTransport::Send(mq::PushRequest request, std::function<void(int, std::string)> done) {
  if (request.url.rfind("ironworker://", 0) == 0)
    return SendToWorker(std::move(request), std::move(done));
  if (request.url.rfind("ironmq://", 0) != 0) {
    client_.Post(std::move(request.url), std::move(request.headers), std::move(request.body),
                 std::move(done), request.qid);
    return;
  }
  auto parsed = mq::ParseIronMqUrl(request.url);        // checked when the subscriber was set
  if (!parsed) return done(0, "malformed ironmq url");  // not shown: it holds a token
  mq::IronMqUrl& u = *parsed;
  std::string project = u.project_id.empty() ? request.project_id : u.project_id;
  if (u.host.empty() || u.host == self_) {
    // This server: post in-process, with the same checks as over HTTP.
    auto to = ProjectFor(u, request);
    if (!to)
      return done(401, "ironmq url: the token is not a token of project " + project +
                           " (an admin token is not taken)");
    engine_.Post(*to, u.queue,
                 {mq::NewMessage{std::move(request.body), 0, {}, request.hops + 1, request.spread}},
                 [done = std::move(done)](Result<std::vector<uint64_t>> r) {
                   if (r) return done(201, "");
                   done(api::StatusFor(r.error().code()), r.error().message());
                 });
    return;
  }
  std::string body = api::Json([&](api::JsonWriter& w) {
    w.StartObject();
    w.Key("messages");
    w.StartArray();
    w.StartObject();
    w.Key("body");
    api::WriteString(w, request.body);
    w.EndObject();
    w.EndArray();
    w.EndObject();
  });
  client_.Post("http://" + u.host + "/3/projects/" + project + "/queues/" + PercentEncode(u.queue) +
                   "/messages",
               {{"Authorization", "OAuth " + u.token},
                {"Content-Type", "application/json"},
                {mq::kHopsHeader, std::to_string(request.hops + 1)},
                {mq::kSpreadHeader, std::to_string(request.spread)}},
               std::move(body), std::move(done), request.qid);
}

void PushTransport::SendToWorker(mq::PushRequest request,
                                 std::function<void(int, std::string)> done) {
  auto parsed = mq::ParseIronWorkerUrl(request.url);  // checked when the subscriber was set
  if (!parsed) return done(0, "malformed ironworker url");
  mq::IronMqUrl& u = *parsed;
  std::string project = u.project_id.empty() ? request.project_id : u.project_id;
  if (u.host.empty() || u.host == self_) {
    // This server: a task of the code, queued as POST /tasks would.
    auto to = ProjectFor(u, request);
    if (!to)
      return done(401, "ironworker url: the token is not a token of project " + project +
                           " (an admin token is not taken)");
    if (!worker_) return done(503, "this server runs no tasks");
    worker::NewTask t;
    t.code_name = u.queue;
    t.payload = std::move(request.body);
    auto r = worker_->QueueTasks(*to, {t});
    if (r) return done(201, "");
    return done(api::StatusFor(r.error().code()), r.error().message());
  }
  std::string body = api::Json([&](api::JsonWriter& w) {
    w.StartObject();
    w.Key("tasks");
    w.StartArray();
    w.StartObject();
    w.Key("code_name");
    api::WriteString(w, u.queue);
    w.Key("payload");
    api::WriteString(w, request.body);
    w.EndObject();
    w.EndArray();
    w.EndObject();
  });
  client_.Post("http://" + u.host + "/2/projects/" + project + "/tasks",
               {{"Authorization", "OAuth " + u.token},
                {"Content-Type", "application/json"},
                {mq::kHopsHeader, std::to_string(request.hops + 1)},
                {mq::kSpreadHeader, std::to_string(request.spread)}},
               std::move(body), std::move(done), request.qid);
}

}  // namespace kiln::server
