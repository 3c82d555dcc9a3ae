#include "http/router.h"

#include <gtest/gtest.h>

namespace kiln::http {
namespace {

Handler Named(int* hit, int id) {
  return [hit, id](Request&) -> boost::asio::awaitable<Response> {
    *hit = id;
    co_return Response{};
  };
}

TEST(RouterTest, MatchesCapturesAndDecodes) {
  Router r;
  int hit = 0;
  r.Add("GET", "/3/projects/:project/queues/:queue", Named(&hit, 1));
  Request req;
  req.method = "GET";
  req.path = "/3/projects/p1/queues/my%20queue";
  const Handler* h = nullptr;
  ASSERT_EQ(r.Find(req, &h), Router::Match::kFound);
  EXPECT_EQ(req.Param("project"), "p1");
  EXPECT_EQ(req.Param("queue"), "my queue");
}

TEST(RouterTest, WrongMethodAndUnknownPathAndBadEscape) {
  Router r;
  int hit = 0;
  r.Add("GET", "/a/:x", Named(&hit, 1));
  const Handler* h = nullptr;
  Request req;
  req.method = "POST";
  req.path = "/a/b";
  EXPECT_EQ(r.Find(req, &h), Router::Match::kNoMethod);
  req.path = "/a/b/c";
  EXPECT_EQ(r.Find(req, &h), Router::Match::kNoPath);
  req.method = "GET";
  req.path = "/a/%zz";
  EXPECT_EQ(r.Find(req, &h), Router::Match::kBadPath);
  req.path = "/a/%4";
  EXPECT_EQ(r.Find(req, &h), Router::Match::kBadPath);
}

// "/tasks/webhook" takes POST only: a GET there is 405, not a task whose id
// is "webhook"; another word is still a task id.
TEST(RouterTest, ALiteralSegmentOwnsItsPathOverAParameter) {
  Router r;
  int hit = 0;
  r.Add("GET", "/tasks/:task", Named(&hit, 1));
  r.Add("POST", "/tasks/webhook", Named(&hit, 2));
  r.Add("POST", "/tasks/:task", Named(&hit, 3));
  const Handler* h = nullptr;
  Request req;
  req.method = "GET";
  req.path = "/tasks/webhook";
  EXPECT_EQ(r.Find(req, &h), Router::Match::kNoMethod);
  req.path = "/tasks/abc";
  ASSERT_EQ(r.Find(req, &h), Router::Match::kFound);
  EXPECT_EQ(req.Param("task"), "abc");
  req.method = "POST";
  req.path = "/tasks/webhook";  // the literal route: no "task" parameter
  ASSERT_EQ(r.Find(req, &h), Router::Match::kFound);
  EXPECT_TRUE(req.params.empty());
  req.path = "/tasks/xyz";
  ASSERT_EQ(r.Find(req, &h), Router::Match::kFound);
  EXPECT_EQ(req.Param("task"), "xyz");
}

TEST(RouterTest, HeadFindsTheGetRoute) {
  Router r;
  int hit = 0;
  r.Add("GET", "/a/:x", Named(&hit, 1));
  r.Add("POST", "/b", Named(&hit, 2));
  const Handler* h = nullptr;
  Request req;
  req.method = "HEAD";
  req.path = "/a/b";
  ASSERT_EQ(r.Find(req, &h), Router::Match::kFound);
  EXPECT_EQ(req.Param("x"), "b");
  req.path = "/b";  // not a POST route
  EXPECT_EQ(r.Find(req, &h), Router::Match::kNoMethod);
}

// An empty segment matches nothing: a script's empty id turns
// DELETE .../messages/{id} into DELETE .../messages/, which is not the clear
// of the queue, and .../queues//messages is not the queue "messages".
TEST(RouterTest, AnEmptySegmentMatchesNothing) {
  Router r;
  int hit = 0;
  r.Add("DELETE", "/q/:queue/messages", Named(&hit, 1));
  r.Add("DELETE", "/q/:queue", Named(&hit, 2));
  const Handler* h = nullptr;
  Request req;
  req.method = "DELETE";
  for (const char* path : {"/q/a/messages/", "/q//messages", "/q/a//messages", "/q/"}) {
    req.path = path;
    EXPECT_EQ(r.Find(req, &h), Router::Match::kNoPath) << path;
  }
  req.path = "//q/a/messages";  // leading slashes are only the root
  EXPECT_EQ(r.Find(req, &h), Router::Match::kFound);
  EXPECT_EQ(req.Param("queue"), "a");
}

TEST(PercentDecodeTest, PlusIsSpaceOnlyInQueries) {
  std::string out;
  ASSERT_TRUE(PercentDecode("a+b%2F", true, &out));
  EXPECT_EQ(out, "a b/");
  ASSERT_TRUE(PercentDecode("a+b", false, &out));
  EXPECT_EQ(out, "a+b");
}

}  // namespace
}  // namespace kiln::http
