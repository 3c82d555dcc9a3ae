// `kiln mq <verb>`: the IronMQ v3 API from the shell.

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/output.h"

namespace kiln::cli {
namespace {

struct MqFlags {
  Connection conn;
  bool json = false;
};

std::string QueuePath(const Connection& c, const std::string& q) {
  return "/3/projects/" + c.project_id + "/queues" + (q.empty() ? "" : "/" + Escape(q));
}

void PrintMessages(const rapidjson::Document& d) {
  auto messages = Array(d, "messages");
  if (messages.Empty()) {
    std::printf("no messages\n");
    return;
  }
  for (const auto& m : messages) {
    std::printf("id %s  reserved %ld", Str(m, "id"), static_cast<long>(Int(m, "reserved_count")));
    if (*Str(m, "reservation_id")) std::printf("  reservation_id %s", Str(m, "reservation_id"));
    std::printf("\n  %s\n", Str(m, "body"));
  }
}

void PrintMsg(const rapidjson::Document& d) {
  if (*Str(d, "msg")) std::printf("%s\n", Str(d, "msg"));
}

}  // namespace

void AddMqCommands(CLI::App& app) {
  auto f = std::make_shared<MqFlags>();
  auto* mq = app.add_subcommand("mq", "Message queues (IronMQ v3)");
  mq->require_subcommand(1);
  mq->fallthrough();  // --json, --port ... also after the verb
  mq->add_option("--scheme", f->conn.scheme,
                 "http or https (IRON_SCHEME, iron.json; default http)");
  mq->add_option("--host", f->conn.host, "Server host (IRON_HOST, iron.json)");
  mq->add_option("--port", f->conn.port, "Server port (IRON_PORT, iron.json)");
  mq->add_option("--project-id", f->conn.project_id, "Project id (IRON_PROJECT_ID, iron.json)");
  mq->add_option("--token", f->conn.token, "Token (IRON_TOKEN, iron.json)");
  mq->add_flag("--json", f->json, "Print the server's JSON reply");
  auto conn = [f] { return Resolve(f->conn); };

  auto* list = mq->add_subcommand("list", "List queues");
  auto prefix = std::make_shared<std::string>();
  list->add_option("--prefix", *prefix, "Only names starting with this");
  list->callback([=] {
    auto c = conn();
    // Page by page (100 names each, after the last one seen) until a short page.
    std::vector<std::string> names;
    for (;;) {
      std::string target = QueuePath(c, "") + "?per_page=100";
      if (!prefix->empty()) target += "&prefix=" + Escape(*prefix);
      if (!names.empty()) target += "&previous=" + Escape(names.back());
      auto reply = Call(c, "GET", target);
      rapidjson::Document d;
      if (reply && reply->status == 200)
        d.Parse<rapidjson::kParseIterativeFlag>(reply->body.c_str());
      if (!reply || reply->status != 200 || !Field(d, "queues").IsArray())
        std::exit(Print(reply, f->json, [](const rapidjson::Document&) {}));
      size_t got = 0;
      for (const auto& q : Array(d, "queues")) {
        ++got;
        if (*Str(q, "name")) names.push_back(Str(q, "name"));
      }
      if (got < 100 || names.empty()) break;
    }
    if (f->json) {
      std::string out = "{\"queues\":[";
      for (size_t i = 0; i < names.size(); ++i)
        out += (i ? ",{\"name\":" : "{\"name\":") + JsonString(names[i]) + "}";
      std::printf("%s]}\n", out.c_str());
    } else {
      for (const auto& n : names) std::printf("%s\n", n.c_str());
    }
    std::exit(0);
  });

  auto* create = mq->add_subcommand("create", "Create a queue, or change its settings");
  auto name = std::make_shared<std::string>();
  auto timeout = std::make_shared<int64_t>(0);
  auto expiration = std::make_shared<int64_t>(0);
  auto dlq = std::make_shared<std::string>();
  auto max_res = std::make_shared<int64_t>(0);
  create->add_option("queue", *name, "Queue name")->required()->check(kNonEmpty);
  create->add_option("--message-timeout", *timeout, "Reservation length in seconds (30-86400)");
  create->add_option("--message-expiration", *expiration, "Seconds a message lives");
  auto* dlq_opt = create->add_option("--dead-letter", *dlq,
                                     "Queue that receives over-reserved messages (\"\": none)");
  auto* max_res_opt =
      create->add_option("--max-reservations", *max_res, "Reservations before dead-lettering");
  auto type = std::make_shared<std::string>();
  auto subs = std::make_shared<std::vector<std::string>>();
  auto retries = std::make_shared<int64_t>(-1);
  auto retries_delay = std::make_shared<int64_t>(0);
  auto error_queue = std::make_shared<std::string>();
  create->add_option("--type", *type, "pull, multicast or unicast");
  create->add_option("--subscriber", *subs, "Push subscriber NAME=URL (repeatable)")
      ->check(kNameEqualsValue)
      ->allow_extra_args(false);  // one value each: the next word is not taken
  auto* retries_opt =
      create->add_option("--retries", *retries, "Push: retries after a failed delivery (0-100)");
  auto* delay_opt =
      create->add_option("--retries-delay", *retries_delay, "Push: seconds between retries");
  auto* error_opt = create->add_option("--error-queue", *error_queue,
                                       "Push: queue for messages given up on (\"\": none)");
  create->callback([=] {
    auto c = conn();
    std::string q = "{";
    auto add = [&](const std::string& kv) { q += (q.size() > 1 ? "," : "") + kv; };
    if (!type->empty()) add("\"type\":" + JsonString(*type));
    // An option given is sent as given ("" and 0 too: "" removes a dead
    // letter or error queue); one not given leaves the queue's setting.
    if (!subs->empty() || retries_opt->count() || delay_opt->count() || error_opt->count()) {
      std::string p = "\"push\":{";
      std::string list;
      for (const auto& sub : *subs) {
        auto eq = sub.find('=');  // there (kNameEqualsValue)
        list += (list.empty() ? "" : ",") + std::string("{\"name\":") +
                JsonString(sub.substr(0, eq)) + ",\"url\":" + JsonString(sub.substr(eq + 1)) + "}";
      }
      std::string fields;
      auto addp = [&](const std::string& kv) { fields += (fields.empty() ? "" : ",") + kv; };
      if (!subs->empty()) addp("\"subscribers\":[" + list + "]");
      if (retries_opt->count()) addp("\"retries\":" + std::to_string(*retries));
      if (delay_opt->count()) addp("\"retries_delay\":" + std::to_string(*retries_delay));
      if (error_opt->count()) addp("\"error_queue\":" + JsonString(*error_queue));
      add(p + fields + "}");
    }
    if (*timeout) add("\"message_timeout\":" + std::to_string(*timeout));
    if (*expiration) add("\"message_expiration\":" + std::to_string(*expiration));
    if (dlq_opt->count() || max_res_opt->count()) {
      // Without --dead-letter the queue's own stays; --dead-letter "" removes it.
      std::string dl;
      if (dlq_opt->count()) dl = "\"queue_name\":" + JsonString(*dlq);
      if (max_res_opt->count())
        dl += (dl.empty() ? "" : ",") + std::string("\"max_reservations\":") +
              std::to_string(*max_res);
      add("\"dead_letter\":{" + dl + "}");
    }
    q += "}";
    std::exit(Print(Call(c, "PUT", QueuePath(c, *name), "{\"queue\":" + q + "}"), f->json,
                    [](const rapidjson::Document& d) {
                      std::printf("queue %s ready\n", Str(Field(d, "queue"), "name"));
                    }));
  });

  auto* info = mq->add_subcommand("info", "Show a queue");
  info->add_option("queue", *name, "Queue name")->required()->check(kNonEmpty);
  info->callback([=] {
    auto c = conn();
    std::exit(Print(Call(c, "GET", QueuePath(c, *name)), f->json, [](const rapidjson::Document& d) {
      const auto& q = Field(d, "queue");
      std::printf("name                %s\n", Str(q, "name"));
      std::printf("type                %s\n", Str(q, "type"));
      std::printf("size                %ld\n", static_cast<long>(Int(q, "size")));
      std::printf("total_messages      %ld\n", static_cast<long>(Int(q, "total_messages")));
      std::printf("message_timeout     %ld s\n", static_cast<long>(Int(q, "message_timeout")));
      std::printf("message_expiration  %ld s\n", static_cast<long>(Int(q, "message_expiration")));
      if (Has(q, "push")) {
        const auto& p = Field(q, "push");
        std::printf("retries             %ld every %ld s\n", static_cast<long>(Int(p, "retries")),
                    static_cast<long>(Int(p, "retries_delay")));
        if (*Str(p, "error_queue")) std::printf("error_queue         %s\n", Str(p, "error_queue"));
        for (const auto& sub : Array(p, "subscribers"))
          std::printf("subscriber          %s  %s\n", Str(sub, "name"), Str(sub, "url"));
      }
      if (Has(q, "dead_letter")) {
        const auto& dl = Field(q, "dead_letter");
        std::printf("dead_letter         %s after %ld reservations\n", Str(dl, "queue_name"),
                    static_cast<long>(Int(dl, "max_reservations")));
      }
    }));
  });

  auto* push = mq->add_subcommand("push", "Post messages (arguments, or one from stdin)");
  auto bodies = std::make_shared<std::vector<std::string>>();
  auto delay = std::make_shared<int64_t>(0);
  push->add_option("queue", *name, "Queue name")->required()->check(kNonEmpty);
  push->add_option("body", *bodies, "Message bodies");
  push->add_option("--delay", *delay, "Seconds before the messages become visible");
  push->callback([=] {
    auto c = conn();
    if (bodies->empty()) {
      if (isatty(STDIN_FILENO))
        std::fprintf(stderr, "kiln: reading one message from stdin (end it with Ctrl-D)\n");
      std::string body(std::istreambuf_iterator<char>(std::cin), {});
      // `echo hello | kiln mq push q` posts "hello": the line's end is not
      // the message's.
      if (body.size() >= 2 && body.compare(body.size() - 2, 2, "\r\n") == 0)
        body.resize(body.size() - 2);
      else if (!body.empty() && body.back() == '\n')
        body.pop_back();
      if (body.empty()) {
        std::fprintf(stderr, "kiln: no message: give bodies as arguments or one on stdin\n");
        std::exit(static_cast<int>(CLI::ExitCodes::RequiredError));  // as a missing argument
      }
      bodies->push_back(std::move(body));
    }
    std::string json = "{\"messages\":[";
    for (size_t i = 0; i < bodies->size(); ++i) {
      json += (i ? "," : "") + std::string("{\"body\":") + JsonString((*bodies)[i]);
      if (*delay) json += ",\"delay\":" + std::to_string(*delay);
      json += "}";
    }
    json += "]}";
    std::exit(Print(Call(c, "POST", QueuePath(c, *name) + "/messages", json), f->json,
                    [](const rapidjson::Document& d) {
                      for (const auto& id : Array(d, "ids"))
                        if (id.IsString()) std::printf("%s\n", id.GetString());
                    }));
  });

  auto* reserve = mq->add_subcommand("reserve", "Reserve messages");
  auto n = std::make_shared<int>(1);
  auto wait = std::make_shared<int>(0);
  auto del = std::make_shared<bool>(false);
  reserve->add_option("queue", *name, "Queue name")->required()->check(kNonEmpty);
  reserve->add_option("-n", *n, "How many (1-100)");
  reserve->add_option("--timeout", *timeout, "Reservation length in seconds");
  reserve->add_option("--wait", *wait, "Long-poll up to this many seconds (0-30)");
  reserve->add_flag("--delete", *del, "Delete the messages as they are reserved");
  reserve->callback([=] {
    auto c = conn();
    std::string json = "{\"n\":" + std::to_string(*n) + ",\"wait\":" + std::to_string(*wait) +
                       (*timeout ? ",\"timeout\":" + std::to_string(*timeout) : "") +
                       (*del ? ",\"delete\":true" : "") + "}";
    std::exit(Print(Call(c, "POST", QueuePath(c, *name) + "/reservations", json), f->json,
                    PrintMessages));
  });

  auto* peek = mq->add_subcommand("peek", "Show ready messages without reserving them");
  peek->add_option("queue", *name, "Queue name")->required()->check(kNonEmpty);
  peek->add_option("-n", *n, "How many (1-100)");
  peek->callback([=] {
    auto c = conn();
    std::exit(Print(Call(c, "GET", QueuePath(c, *name) + "/messages?n=" + std::to_string(*n)),
                    f->json, PrintMessages));
  });

  auto id = std::make_shared<std::string>();
  auto rid = std::make_shared<std::string>();
  auto* delete_cmd = mq->add_subcommand("delete", "Delete a message");
  delete_cmd->add_option("queue", *name, "Queue name")->required()->check(kNonEmpty);
  delete_cmd->add_option("id", *id, "Message id")->required()->check(kNonEmpty);
  delete_cmd->add_option("--reservation-id", *rid, "Needed when the message is reserved");
  delete_cmd->callback([=] {
    auto c = conn();
    std::string json = rid->empty() ? "{}" : "{\"reservation_id\":" + JsonString(*rid) + "}";
    std::exit(Print(Call(c, "DELETE", QueuePath(c, *name) + "/messages/" + Escape(*id), json),
                    f->json, PrintMsg));
  });

  auto* touch = mq->add_subcommand("touch", "Extend a reservation");
  touch->add_option("queue", *name, "Queue name")->required()->check(kNonEmpty);
  touch->add_option("id", *id, "Message id")->required()->check(kNonEmpty);
  touch->add_option("--reservation-id", *rid, "Current reservation id")
      ->required()
      ->check(kNonEmpty);
  touch->add_option("--timeout", *timeout, "New reservation length in seconds");
  touch->callback([=] {
    auto c = conn();
    std::string json = "{\"reservation_id\":" + JsonString(*rid) +
                       (*timeout ? ",\"timeout\":" + std::to_string(*timeout) : "") + "}";
    std::exit(
        Print(Call(c, "POST", QueuePath(c, *name) + "/messages/" + Escape(*id) + "/touch", json),
              f->json, [](const rapidjson::Document& d) {
                std::printf("reservation_id %s\n", Str(d, "reservation_id"));
              }));
  });

  auto* release = mq->add_subcommand("release", "Give a reserved message back");
  release->add_option("queue", *name, "Queue name")->required()->check(kNonEmpty);
  release->add_option("id", *id, "Message id")->required()->check(kNonEmpty);
  release->add_option("--reservation-id", *rid, "Current reservation id")
      ->required()
      ->check(kNonEmpty);
  release->add_option("--delay", *delay, "Seconds before it is visible again");
  release->callback([=] {
    auto c = conn();
    std::string json =
        "{\"reservation_id\":" + JsonString(*rid) + ",\"delay\":" + std::to_string(*delay) + "}";
    std::exit(
        Print(Call(c, "POST", QueuePath(c, *name) + "/messages/" + Escape(*id) + "/release", json),
              f->json, PrintMsg));
  });

  auto* status = mq->add_subcommand("status", "Delivery status of a push message");
  status->add_option("queue", *name, "Queue name")->required()->check(kNonEmpty);
  status->add_option("id", *id, "Message id")->required()->check(kNonEmpty);
  status->callback([=] {
    auto c = conn();
    std::exit(Print(
        Call(c, "GET", QueuePath(c, *name) + "/messages/" + Escape(*id) + "/subscribers"), f->json,
        [](const rapidjson::Document& d) {
          for (const auto& s : Array(d, "subscribers")) {
            std::printf("%-16s %-9s code %-3ld tries %ld retries left %ld  %s\n", Str(s, "name"),
                        Str(s, "status"), static_cast<long>(Int(s, "status_code")),
                        static_cast<long>(Int(s, "tries")),
                        static_cast<long>(Int(s, "retries_remaining")), Str(s, "url"));
            if (*Str(s, "msg")) std::printf("  %s\n", Str(s, "msg"));
          }
        }));
  });

  auto* clear = mq->add_subcommand("clear", "Delete every message of a queue");
  clear->add_option("queue", *name, "Queue name")->required()->check(kNonEmpty);
  clear->callback([=] {
    auto c = conn();
    std::exit(Print(Call(c, "DELETE", QueuePath(c, *name) + "/messages", "{}"), f->json, PrintMsg));
  });

  auto* rm = mq->add_subcommand("rm", "Delete a queue and its messages");
  rm->add_option("queue", *name, "Queue name")->required()->check(kNonEmpty);
  rm->callback([=] {
    auto c = conn();
    std::exit(Print(Call(c, "DELETE", QueuePath(c, *name), "{}"), f->json, PrintMsg));
  });
}

}  // namespace kiln::cli
