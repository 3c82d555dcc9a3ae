// base/url: the split of the http(s) URLs push deliveries go to, and what
// is refused when a subscriber is set.
#include "base/url.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(UrlTest, ParseHttpUrlSplitsWhatARequestNeeds) {
  auto u = ParseHttpUrl("https://user:secret@hooks.example.com:8443/in?x=1#frag");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "hooks.example.com");
  EXPECT_EQ(u->port, "8443");
  EXPECT_EQ(u->target, "/in?x=1");
  EXPECT_EQ(u->key(), "https://hooks.example.com:8443");

  u = ParseHttpUrl("http://127.0.0.1?a=b");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, "80");
  EXPECT_EQ(u->target, "/?a=b");

  u = ParseHttpUrl("http://[::1]:9000/hook");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, "9000");
  EXPECT_EQ(ParseHttpUrl("https://[fe80::1]")->port, "443");
}

TEST(UrlTest, ParseHttpUrlRefusesWhatCannotBeSentTo) {
  for (const char* bad : {"",
                          "ftp://h/",
                          "http://",
                          "http:///path",
                          "http://h:/",
                          "http://h:0/",
                          "http://h:65536/",
                          "http://h:http/",
                          "http://h:99999999999999999999/",
                          "http://bad host/",
                          "http://h/a b",
                          "http://h/\x7f",
                          "http://h\r\n/",
                          "http://[::1/",
                          "http://[]/",
                          "http://[::1]x/",
                          "http://[::g]/",
                          "http://[::1]:/",
                          "http://h%2f/",
                          "HTTP://h/"})
    EXPECT_FALSE(ParseHttpUrl(bad)) << bad;
  EXPECT_TRUE(ParseHttpUrl("http://under_score.local:1/"));
  EXPECT_TRUE(ParseHttpUrl("http://h:65535"));
}

}  // namespace
}  // namespace kiln
