#include "api/multipart.h"

#include <gtest/gtest.h>

namespace kiln::api {
namespace {

// What needle 0.7.8 (iron_worker@0.1.8) sends, iron-api.md §3.2.
TEST(MultipartTest, ParsesTheIronWorkerClientsUpload) {
  std::string b = "--------------------NODENEEDLEHTTPCLIENT";
  std::string body = "--" + b + "\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n" +
                     "{\"name\":\"hello\"}\r\n--" + b +
                     "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"file\"\r\n"
                     "Content-Transfer-Encoding: binary\r\nContent-Type: application/zip\r\n\r\n" +
                     std::string("PK\x03\x04\r\n--x", 9) + "\r\n--" + b + "--";
  auto parts = ParseMultipart("multipart/form-data; boundary=" + b, body);
  ASSERT_TRUE(parts) << parts.error().message();
  EXPECT_EQ(parts->at("data"), "{\"name\":\"hello\"}");
  EXPECT_EQ(parts->at("file"), std::string("PK\x03\x04\r\n--x", 9));
}

TEST(MultipartTest, QuotedBoundaryAndOnlyData) {
  auto parts =
      ParseMultipart("multipart/form-data; boundary=\"abc\"",
                     "--abc\r\ncontent-disposition: form-data; name=data\r\n\r\n{}\r\n--abc--\r\n");
  ASSERT_TRUE(parts);
  EXPECT_EQ(parts->size(), 1u);
  EXPECT_EQ(parts->at("data"), "{}");
}

TEST(MultipartTest, RejectsBrokenBodies) {
  EXPECT_FALSE(ParseMultipart("application/json", "{}"));
  EXPECT_FALSE(ParseMultipart("multipart/form-data", "--x\r\n"));
  EXPECT_FALSE(ParseMultipart("multipart/form-data; boundary=x", "no delimiter"));
  EXPECT_FALSE(
      ParseMultipart("multipart/form-data; boundary=x",
                     "--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nnever closed"));
  EXPECT_FALSE(ParseMultipart("multipart/form-data; boundary=x", "--x\r\nheaders without end"));
}

}  // namespace
}  // namespace kiln::api
