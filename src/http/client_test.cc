#include "http/client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "http/message.h"

namespace kiln::http {
namespace {

// A keep-alive HTTP server on a loopback port that answers 200 to every
// request and records, per connection it accepted, whether the client has
// closed it.
class KeepAliveServer {
 public:
  // `then_408`: after its first answer, a connection sends a 408 nobody
  // asked for (as servers do before closing an idle one), and stays open.
  explicit KeepAliveServer(bool then_408 = false) : then_408_(then_408) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(listen(listen_fd_, 16), 0);
    socklen_t len = sizeof a;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }
  ~KeepAliveServer() {
    shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    close(listen_fd_);
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : conns_) t.join();
    for (int fd : fds_) close(fd);
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hook"; }
  size_t accepted() {
    std::lock_guard lock(mu_);
    return fds_.size();
  }
  // Waits (up to `limit`) until `n` unasked 408s were sent (then_408):
  // on loopback they are in the client's socket once sent.
  bool LateSent(size_t n, std::chrono::milliseconds limit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return late_sent_ >= n; });
  }
  // Waits (up to `limit`) until the client closed connection `i`.
  bool ClosedByClient(size_t i, std::chrono::milliseconds limit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return i < closed_.size() && closed_[i]; });
  }

 private:
  void Accept() {
    for (;;) {
      int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      std::lock_guard lock(mu_);
      size_t i = fds_.size();
      fds_.push_back(fd);
      closed_.push_back(false);
      conns_.emplace_back([this, fd, i] { Serve(fd, i); });
    }
  }
  void Serve(int fd, size_t i) {
    std::string in;
    char buf[4096];
    for (;;) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
      // Requests here carry "Content-Length: 0"; answer each whole head.
      for (size_t end; (end = in.find("\r\n\r\n")) != std::string::npos;) {
        in.erase(0, end + 4);
        std::string ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        if (send(fd, ok.data(), ok.size(), MSG_NOSIGNAL) < 0) break;
        if (then_408_) {  // after the answer was read
          std::this_thread::sleep_for(std::chrono::milliseconds(30));
          std::string late = "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n";
          if (send(fd, late.data(), late.size(), MSG_NOSIGNAL) < 0) break;
          std::lock_guard lock(mu_);
          ++late_sent_;
          cv_.notify_all();
        }
      }
    }
    std::lock_guard lock(mu_);
    closed_[i] = true;
    cv_.notify_all();
  }

  bool then_408_ = false;
  size_t late_sent_ = 0;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> fds_;
  std::vector<bool> closed_;
  std::vector<std::thread> conns_;
};

int PostAndWait(Client& client, const std::string& url) {
  std::promise<int> status;
  client.Post(
      url, {}, "", [&](int s, std::string) { status.set_value(s); }, 0);
  return status.get_future().get();
}

constexpr auto kLong = std::chrono::seconds(10);

TEST(ClientTest, ReusesAnIdleConnectionThenClosesItAfterTheIdleTimeout) {
  KeepAliveServer server;
  ClientOptions o;
  o.idle_timeout = std::chrono::milliseconds(300);
  Client client(o);
  ASSERT_EQ(PostAndWait(client, server.url()), 200);
  ASSERT_EQ(PostAndWait(client, server.url()), 200);
  EXPECT_EQ(server.accepted(), 1u);  // kept alive and reused
  EXPECT_TRUE(server.ClosedByClient(0, kLong));
  // The next request gets a new connection.
  ASSERT_EQ(PostAndWait(client, server.url()), 200);
  EXPECT_EQ(server.accepted(), 2u);
}

// An idle connection on which the server sent something unasked (a 408
// before closing it) is not reused: that would be read as the next
// request's answer.
TEST(ClientTest, AnIdleConnectionWithBytesWaitingIsNotReused) {
  KeepAliveServer server(/*then_408=*/true);
  Client client(ClientOptions{});
  ASSERT_EQ(PostAndWait(client, server.url()), 200);
  ASSERT_TRUE(server.LateSent(1, kLong));                       // the 408 is there
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // idle long enough to be looked at
  EXPECT_EQ(PostAndWait(client, server.url()), 200);
  EXPECT_EQ(server.accepted(), 2u);
}

TEST(ClientTest, PastMaxIdleTheConnectionIdleLongestIsClosed) {
  KeepAliveServer a, b, c;
  ClientOptions o;
  o.max_idle = 2;
  Client client(o);
  ASSERT_EQ(PostAndWait(client, a.url()), 200);
  ASSERT_EQ(PostAndWait(client, b.url()), 200);
  ASSERT_EQ(PostAndWait(client, c.url()), 200);
  EXPECT_TRUE(a.ClosedByClient(0, kLong));
  // The two kept are still open and still reused.
  EXPECT_FALSE(b.ClosedByClient(0, std::chrono::milliseconds(0)));
  EXPECT_FALSE(c.ClosedByClient(0, std::chrono::milliseconds(0)));
  ASSERT_EQ(PostAndWait(client, b.url()), 200);
  ASSERT_EQ(PostAndWait(client, c.url()), 200);
  EXPECT_EQ(b.accepted(), 1u);
  EXPECT_EQ(c.accepted(), 1u);
}

// A subscriber name whose lookup hangs holds only its own request: one for
// another name on the same client thread is answered meanwhile (asio's
// resolver ran one lookup at a time per thread).
TEST(ClientTest, ANameWhoseLookupHangsHoldsNoOtherName) {
  KeepAliveServer server;
  auto release = std::make_shared<std::promise<void>>();
  std::shared_future<void> released = release->get_future().share();
  ClientOptions o;
  o.resolver.lookup = [released](const std::string& host, const std::string&) -> Result<Addresses> {
    if (host == "hangs.test") released.wait();
    return Addresses{"127.0.0.1"};
  };
  Client client(o);
  std::promise<int> hung;
  client.Post(
      "http://hangs.test:1/hook", {}, "", [&](int s, std::string) { hung.set_value(s); }, 0);
  std::string other = server.url();
  other.replace(other.find("127.0.0.1"), 9, "answers.test");
  EXPECT_EQ(PostAndWait(client, other), 200);
  auto hung_status = hung.get_future();
  EXPECT_EQ(hung_status.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  release->set_value();
  EXPECT_EQ(hung_status.get(), 0);  // then port 1 refuses it
}

// Header text from subscribers, messages and handlers loses every control
// byte but HT: no CR or LF to start a line of its own, no NUL to cut at.
TEST(HeaderTextTest, ControlBytesAreDropped) {
  std::string out;
  constexpr char kText[] =
      "a\r\nX-Evil: 1\0b\tc\x7f\x01"
      "d";
  AppendHeaderText(std::string(kText, sizeof kText - 1), &out);
  EXPECT_EQ(out, "aX-Evil: 1b\tcd");
}

}  // namespace
}  // namespace kiln::http
