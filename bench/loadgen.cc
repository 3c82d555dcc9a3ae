// kiln-bench: a load generator that runs the same queue cycle against Kiln
// and its peers over persistent connections, one thread per client, and
// prints one JSON line per run: messages/s and p50/p99 of a cycle.
//
//   cycle        post one 100-byte message, reserve one, delete it
//   batch-cycle  post 100 in one request, reserve n=100, delete those 100
//   batch-post   post 100 per request (Kiln only)
//   push         post to a push queue whose subscribers are a sink inside this
//                program; reports deliveries/s and post-to-delivery latency
//   sink         only run the sink (for wrk to measure its ceiling)
//
// Targets: kiln (HTTP, Boost.Beast), beanstalkd (put/reserve/delete),
// redis (LPUSH / BLMOVE / LREM reliable queue), postgres (libpq, SKIP LOCKED).

#include <libpq-fe.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string target = "kiln";
  std::string mode = "cycle";
  std::string host = "127.0.0.1";
  std::string port = "8080";
  std::string project, token;  // kiln
  std::string queue = "bench";
  std::string conninfo;  // postgres
  int clients = 1;
  int seconds = 10;
  int body_bytes = 100;
  int batch = 100;
  long stop_after = 0;  // stop once this many messages went through (0: run the time)
  int subscribers = 1;  // push
  int sink_port = 0;    // push, sink
  double rate = 0;      // requests per second per client (0: as fast as possible)
};

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// An HTTP sink: a thread per connection, answers every request with 200 and,
// when the body is a timestamp from NowNs, records the delivery latency.
class Sink {
 public:
  explicit Sink(int port)
      : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port)) {
    port_ = acceptor_.local_endpoint().port();
    std::thread([this] { Accept(); }).detach();  // lives until the process ends
  }
  int port() const { return port_; }
  long deliveries() const { return deliveries_; }
  std::vector<double> TakeLatencies() {
    std::lock_guard lock(mu_);
    return std::move(latencies_);
  }
  void Reset() {
    std::lock_guard lock(mu_);
    latencies_.clear();
    deliveries_ = 0;
  }

 private:
  void Accept() {
    for (;;) {
      tcp::socket s(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(s, ec);
      if (ec) return;
      std::thread([this, s = std::move(s)]() mutable { Serve(std::move(s)); }).detach();
    }
  }
  void Serve(tcp::socket s) {
    s.set_option(tcp::no_delay(true));
    beast::flat_buffer buf;
    for (;;) {
      bhttp::request<bhttp::string_body> req;
      boost::system::error_code ec;
      bhttp::read(s, buf, req, ec);
      if (ec) return;
      const auto& b = req.body();
      if (!b.empty() && b[0] >= '0' && b[0] <= '9') {
        double us = (NowNs() - std::stoll(b)) / 1000.0;
        std::lock_guard lock(mu_);
        latencies_.push_back(us);
      }
      ++deliveries_;
      bhttp::response<bhttp::string_body> res{bhttp::status::ok, req.version()};
      res.body() = "ok";
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      bhttp::write(s, res, ec);
      if (ec || !req.keep_alive()) return;
    }
  }
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  int port_ = 0;
  std::mutex mu_;
  std::vector<double> latencies_;
  std::atomic<long> deliveries_{0};
};

// One client's connection to a target; Cycle runs one unit of work and
// returns how many messages went through it.
class Driver {
 public:
  virtual ~Driver() = default;
  virtual int Cycle() = 0;
};

std::string Between(const std::string& s, const std::string& open, char close, size_t from = 0,
                    size_t* end = nullptr) {
  size_t i = s.find(open, from);
  if (i == std::string::npos) throw std::runtime_error("unexpected reply: " + s.substr(0, 200));
  i += open.size();
  size_t j = s.find(close, i);
  if (end) *end = j;
  return s.substr(i, j - i);
}

class KilnDriver : public Driver {
 public:
  // One request, for set-up.
  std::string Request(const char* method, const std::string& target, const std::string& body,
                      int want) {
    return Call(method, target, body, want);
  }

  explicit KilnDriver(const Options& o) : o_(o), sock_(ioc_) {
    tcp::resolver r(ioc_);
    asio::connect(sock_, r.resolve(o.host, o.port));
    sock_.set_option(tcp::no_delay(true));
    base_ = "/3/projects/" + o.project + "/queues/" + o.queue;
    body_ = std::string(o.body_bytes, 'x');
  }

  int Cycle() override {
    if (o_.mode == "push") {  // --batch messages per request, each stamped with its time
      std::string post = "{\"messages\":[";
      std::string now = std::to_string(NowNs());
      for (int i = 0; i < o_.batch; ++i)
        post += (i ? ",{\"body\":\"" : "{\"body\":\"") + now + "\"}";
      Call("POST", base_ + "/messages", post + "]}", 201);
      return o_.batch;
    }
    if (o_.mode == "cycle") {
      Call("POST", base_ + "/messages", "{\"messages\":[{\"body\":\"" + body_ + "\"}]}", 201);
      std::string res = Call("POST", base_ + "/reservations", "{\"n\":1}", 200);
      if (res.find("\"id\"") == std::string::npos) return 0;  // another client took it
      std::string id = Between(res, "\"id\":\"", '"');
      std::string rid = Between(res, "\"reservation_id\":\"", '"');
      Call("DELETE", base_ + "/messages/" + id, "{\"reservation_id\":\"" + rid + "\"}", 200);
      return 1;
    }
    std::string post = "{\"messages\":[";
    for (int i = 0; i < o_.batch; ++i)
      post += (i ? ",{\"body\":\"" : "{\"body\":\"") + body_ + "\"}";
    post += "]}";
    Call("POST", base_ + "/messages", post, 201);
    if (o_.mode == "batch-post") return o_.batch;
    std::string res =
        Call("POST", base_ + "/reservations", "{\"n\":" + std::to_string(o_.batch) + "}", 200);
    std::string del = "{\"ids\":[";
    size_t pos = 0;
    int n = 0;
    while ((pos = res.find("\"id\":\"", pos)) != std::string::npos) {
      size_t end;
      std::string id = Between(res, "\"id\":\"", '"', pos, &end);
      std::string rid = Between(res, "\"reservation_id\":\"", '"', end, &end);
      del += (n++ ? "," : "") + std::string("{\"id\":\"") + id + "\",\"reservation_id\":\"" + rid +
             "\"}";
      pos = end;
    }
    del += "]}";
    if (n) Call("DELETE", base_ + "/messages", del, 200);
    return n;
  }

 private:
  // A minimal HTTP/1.1 client, as lean as the RESP and beanstalk ones below,
  // so that the load generator takes as little as it can of the cores it
  // shares with the server: one write per request; answers are read up to
  // their head and then their Content-Length (Kiln always sends one).
  std::string Call(const char* method, const std::string& target, const std::string& body,
                   int want) {
    out_.clear();
    out_.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ");
    out_.append(o_.host).append("\r\nAuthorization: OAuth ").append(o_.token);
    out_.append("\r\nContent-Type: application/json\r\nContent-Length: ");
    out_.append(std::to_string(body.size())).append("\r\n\r\n").append(body);
    asio::write(sock_, asio::buffer(out_));
    size_t head_end;
    size_t scanned = 0;
    while ((head_end = in_.find("\r\n\r\n", scanned)) == std::string::npos) {
      scanned = in_.size() < 3 ? 0 : in_.size() - 3;
      ReadSome();
    }
    head_end += 4;
    std::string_view head(in_.data(), head_end);
    int status = head.size() > 12 ? std::atoi(in_.c_str() + 9) : 0;
    size_t len = ContentLength(head);
    while (in_.size() < head_end + len) ReadSome();
    std::string res = in_.substr(head_end, len);
    in_.erase(0, head_end + len);
    if (status != want)
      throw std::runtime_error(std::string(method) + " " + target + ": " + std::to_string(status) +
                               " " + res);
    return res;
  }
  void ReadSome() {
    char chunk[16384];
    size_t n = sock_.read_some(asio::buffer(chunk));
    in_.append(chunk, n);
  }
  // The Content-Length of an answer's head (0 without one).
  static size_t ContentLength(std::string_view head) {
    for (size_t at = head.find("\r\n"); at != std::string_view::npos;
         at = head.find("\r\n", at + 2)) {
      std::string_view line = head.substr(at + 2, head.find("\r\n", at + 2) - at - 2);
      size_t colon = line.find(':');
      if (colon != std::string_view::npos &&
          beast::iequals(line.substr(0, colon), "content-length"))
        return std::strtoul(std::string(line.substr(colon + 1)).c_str(), nullptr, 10);
    }
    return 0;
  }

  const Options& o_;
  asio::io_context ioc_;
  tcp::socket sock_;
  std::string out_, in_;  // the request being written; bytes read and not yet consumed
  std::string base_, body_;
};

// A line-oriented TCP connection for beanstalkd and Redis.
class LineConn {
 public:
  LineConn(const std::string& host, const std::string& port) : sock_(ioc_) {
    tcp::resolver r(ioc_);
    asio::connect(sock_, r.resolve(host, port));
    sock_.set_option(tcp::no_delay(true));
  }
  void Send(const std::string& s) { asio::write(sock_, asio::buffer(s)); }
  std::string Line() {
    asio::read_until(sock_, buf_, "\r\n");
    std::istream is(&buf_);
    std::string line;
    std::getline(is, line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
  }
  std::string Bytes(size_t n) {  // n bytes plus the trailing CRLF
    if (buf_.size() < n + 2) asio::read(sock_, buf_, asio::transfer_exactly(n + 2 - buf_.size()));
    std::string out(asio::buffers_begin(buf_.data()), asio::buffers_begin(buf_.data()) + n);
    buf_.consume(n + 2);
    return out;
  }

 private:
  asio::io_context ioc_;
  tcp::socket sock_;
  asio::streambuf buf_;
};

class BeanstalkDriver : public Driver {
 public:
  explicit BeanstalkDriver(const Options& o) : c_(o.host, o.port), body_(o.body_bytes, 'x') {}
  int Cycle() override {
    c_.Send("put 0 0 60 " + std::to_string(body_.size()) + "\r\n" + body_ + "\r\n");
    Expect(c_.Line(), "INSERTED");
    c_.Send("reserve-with-timeout 0\r\n");
    std::string r = c_.Line();
    if (r.rfind("TIMED_OUT", 0) == 0) return 0;
    Expect(r, "RESERVED");
    size_t sp = r.find(' ', 9);
    std::string id = r.substr(9, sp - 9);
    c_.Bytes(std::stoul(r.substr(sp + 1)));
    c_.Send("delete " + id + "\r\n");
    Expect(c_.Line(), "DELETED");
    return 1;
  }

 private:
  static void Expect(const std::string& got, const char* want) {
    if (got.rfind(want, 0) != 0) throw std::runtime_error("beanstalkd: " + got);
  }
  LineConn c_;
  std::string body_;
};

class RedisDriver : public Driver {
 public:
  explicit RedisDriver(const Options& o)
      : c_(o.host, o.port), q_(o.queue), body_(o.body_bytes, 'x') {}
  int Cycle() override {
    Command({"LPUSH", q_, body_});
    Reply();
    Command({"BLMOVE", q_, q_ + ":processing", "RIGHT", "LEFT", "1"});
    std::string got = Reply();
    if (got.empty()) return 0;
    Command({"LREM", q_ + ":processing", "1", got});
    Reply();
    return 1;
  }

 private:
  void Command(std::initializer_list<std::string> args) {
    std::string s = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) s += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    c_.Send(s);
  }
  std::string Reply() {
    std::string line = c_.Line();
    if (line.empty()) throw std::runtime_error("redis: empty reply");
    switch (line[0]) {
      case ':':
      case '+':
        return line.substr(1);
      case '$': {
        long n = std::stol(line.substr(1));
        return n < 0 ? std::string() : c_.Bytes(static_cast<size_t>(n));
      }
      default:
        throw std::runtime_error("redis: " + line);
    }
  }
  LineConn c_;
  std::string q_, body_;
};

class PostgresDriver : public Driver {
 public:
  explicit PostgresDriver(const Options& o) : body_(o.body_bytes, 'x') {
    conn_ = PQconnectdb(o.conninfo.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(conn_));
    Prepare("post", "INSERT INTO bench_queue(body) VALUES ($1)");
    Prepare("reserve",
            "UPDATE bench_queue SET reserved_until = now() + interval '60 seconds' WHERE id = "
            "(SELECT id FROM bench_queue WHERE reserved_until < now() ORDER BY id "
            "FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id, body");
    Prepare("delete", "DELETE FROM bench_queue WHERE id = $1");
  }
  ~PostgresDriver() override { PQfinish(conn_); }
  int Cycle() override {
    const char* p[1] = {body_.c_str()};
    Exec("post", 1, p);
    PGresult* r = PQexecPrepared(conn_, "reserve", 0, nullptr, nullptr, nullptr, 0);
    Check(r, PGRES_TUPLES_OK);
    if (PQntuples(r) == 0) {
      PQclear(r);
      return 0;
    }
    std::string id = PQgetvalue(r, 0, 0);
    PQclear(r);
    const char* d[1] = {id.c_str()};
    Exec("delete", 1, d);
    return 1;
  }

 private:
  void Prepare(const char* name, const char* sql) {
    PGresult* r = PQprepare(conn_, name, sql, 0, nullptr);
    Check(r, PGRES_COMMAND_OK);
    PQclear(r);
  }
  void Exec(const char* name, int n, const char* const* params) {
    PGresult* r = PQexecPrepared(conn_, name, n, params, nullptr, nullptr, 0);
    Check(r, PGRES_COMMAND_OK);
    PQclear(r);
  }
  void Check(PGresult* r, ExecStatusType want) {
    if (PQresultStatus(r) != want) {
      std::string e = PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error("postgres: " + e);
    }
  }
  PGconn* conn_;
  std::string body_;
};

std::unique_ptr<Driver> MakeDriver(const Options& o) {
  if (o.target == "kiln") return std::make_unique<KilnDriver>(o);
  if (o.target == "beanstalkd") return std::make_unique<BeanstalkDriver>(o);
  if (o.target == "redis") return std::make_unique<RedisDriver>(o);
  if (o.target == "postgres") return std::make_unique<PostgresDriver>(o);
  throw std::runtime_error("unknown target " + o.target);
}

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"kiln-bench: the queue cycle against Kiln and its peers"};
  app.add_option("--target", o.target, "kiln, beanstalkd, redis, postgres");
  app.add_option("--mode", o.mode, "cycle, batch-cycle, batch-post");
  app.add_option("--host", o.host);
  app.add_option("--port", o.port);
  app.add_option("--project", o.project);
  app.add_option("--token", o.token);
  app.add_option("--queue", o.queue);
  app.add_option("--conninfo", o.conninfo, "libpq connection string");
  app.add_option("--clients", o.clients);
  app.add_option("--seconds", o.seconds)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--body-bytes", o.body_bytes);
  app.add_option("--batch", o.batch);
  app.add_option("--stop-after", o.stop_after, "Stop after this many messages");
  app.add_option("--subscribers", o.subscribers, "push: subscribers of the push queue");
  app.add_option("--sink-port", o.sink_port, "push, sink: port of the sink (0: any)");
  app.add_option("--rate", o.rate, "Requests per second per client (0: unpaced)");
  CLI11_PARSE(app, argc, argv);

  if (o.mode == "sink") {
    Sink sink(o.sink_port);
    std::printf("%d\n", sink.port());
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(o.seconds));
    std::_Exit(0);
  }
  std::unique_ptr<Sink> sink;
  if (o.mode == "push") {
    sink = std::make_unique<Sink>(o.sink_port);
    std::string subs;
    for (int i = 0; i < o.subscribers; ++i)
      subs += (i ? "," : "") + std::string("{\"name\":\"s") + std::to_string(i) +
              "\",\"url\":\"http://127.0.0.1:" + std::to_string(sink->port()) + "/s" +
              std::to_string(i) + "\"}";
    KilnDriver setup(o);
    setup.Request("PUT", "/3/projects/" + o.project + "/queues/" + o.queue,
                  "{\"queue\":{\"type\":\"multicast\",\"push\":{\"subscribers\":[" + subs + "]}}}",
                  200);
  }

  std::atomic<bool> stop{false};
  std::atomic<bool> failed{false};
  std::atomic<long> done{0};
  std::vector<std::vector<double>> latencies(o.clients);
  std::vector<long> counts(o.clients, 0);
  std::vector<std::thread> threads;
  auto started = Clock::now();
  for (int c = 0; c < o.clients; ++c) {
    threads.emplace_back([&, c] {
      try {
        auto d = MakeDriver(o);
        auto paced = Clock::now();
        while (!stop) {
          if (o.rate > 0) {
            paced += std::chrono::duration_cast<Clock::duration>(
                std::chrono::duration<double>(1.0 / o.rate));
            std::this_thread::sleep_until(paced);
          }
          auto t0 = Clock::now();
          int n = d->Cycle();
          latencies[c].push_back(
              std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
          counts[c] += n;
          if (o.stop_after && (done += n) >= o.stop_after) stop = true;
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "client %d: %s\n", c, e.what());
        failed = true;
        stop = true;
      }
    });
  }
  for (auto until = started + std::chrono::seconds(o.seconds); !stop && Clock::now() < until;)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  stop = true;
  for (auto& t : threads) t.join();
  double secs = std::chrono::duration<double>(Clock::now() - started).count();
  std::vector<double> all;
  long total = 0;
  for (int c = 0; c < o.clients; ++c) {
    all.insert(all.end(), latencies[c].begin(), latencies[c].end());
    total += counts[c];
  }
  if (sink) {
    // Let the deliveries of what was posted drain, then report the sink's view.
    long want = total * o.subscribers;
    for (int i = 0; i < 300 && sink->deliveries() < want; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    double drained = std::chrono::duration<double>(Clock::now() - started).count();
    all = sink->TakeLatencies();
    total = sink->deliveries();
    secs = drained;
  }
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0.0 : all[static_cast<size_t>(p * (all.size() - 1))];
  };
  std::printf(
      "{\"target\":\"%s\",\"mode\":\"%s\",\"clients\":%d,\"messages\":%ld,\"seconds\":%.2f,"
      "\"msgs_per_sec\":%.0f,\"p50_us\":%.0f,\"p99_us\":%.0f}\n",
      o.target.c_str(), o.mode.c_str(), o.clients, total, secs, total / secs, pct(0.5), pct(0.99));
  return failed ? 1 : 0;
}
