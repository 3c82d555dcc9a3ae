#include "server/push_transport.h"

#include "api/errors.h"
#include "api/json.h"
#include "base/url.h"

namespace kiln::server {

PushTransport::PushTransport(mq::Engine& engine, access::Access& access,
                             http::ClientOptions options, std::string self)
    : engine_(engine), access_(access), client_(std::move(options)), self_(std::move(self)) {}

void PushTransport::Send(mq::PushRequest request, std::function<void(int, std::string)> done) {
  if (request.url.rfind("ironmq://", 0) != 0) {
    client_.Post(std::move(request.url), std::move(request.headers), std::move(request.body),
                 std::move(done), request.qid);
    return;
  }
  auto parsed = mq::ParseIronMqUrl(request.url);  // checked when the subscriber was set
  if (!parsed) return done(0, "malformed ironmq url: " + request.url);
  mq::IronMqUrl& u = *parsed;
  std::string project = u.project_id.empty() ? request.project_id : u.project_id;
  if (u.host.empty() || u.host == self_) {
    // This server: post in-process, with the same checks as over HTTP.
    if (project != request.project_id) {
      auto p = access_.Authenticate(u.token);
      if (!p || (!p->admin && p->project_id != project))
        return done(401, "ironmq url: token not valid for project " + project);
    }
    engine_.Post(project, u.queue, {mq::NewMessage{std::move(request.body), 0, {}}},
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
               {{"Authorization", "OAuth " + u.token}, {"Content-Type", "application/json"}},
               std::move(body), std::move(done), request.qid);
}

}  // namespace kiln::server
