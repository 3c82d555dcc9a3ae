// /healthz and /version: no token needed.

#include "api/api.h"
#include "api/json.h"

#ifndef KILN_VERSION
#define KILN_VERSION "dev"
#endif

namespace kiln::api {

void AddSystemRoutes(http::Router& router, const Services& s) {
  router.Add("GET", "/healthz", [s](http::Request&) -> boost::asio::awaitable<http::Response> {
    if (*s.stopping) co_return http::Response{503, MsgJson("Shutting down")};
    co_return http::Response{200, MsgJson("ok")};
  });
  router.Add("GET", "/version", [](http::Request&) -> boost::asio::awaitable<http::Response> {
    co_return http::Response{200, Json([](JsonWriter& w) {
                               w.StartObject();
                               w.Key("version");
                               w.String(KILN_VERSION);
                               w.EndObject();
                             })};
  });
}

}  // namespace kiln::api
