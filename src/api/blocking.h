// Offloading a handler's slow disk work: `co_await OffIoThread(pool, fn)`
// runs fn() on a thread of `pool` and resumes the coroutine on its own io
// thread with fn's result, so that the io thread serves its other
// connections meanwhile. For work measured in milliseconds or more (a code
// package of up to 64 MB written and fsync'd, or read back); a call that
// takes microseconds is cheaper on the io thread than two thread hand-offs.
// While fn runs the handler is suspended, so fn may use what the handler
// owns (its frame, its Request), which nothing else touches meanwhile; it
// must not use io-thread-only state. It runs to completion even when the
// client has gone away.
// For api/*_routes.cc.
#pragma once

// Boost 1.74's awaitable.hpp uses std::exchange without including
// <utility>: the standard headers go first.
// clang-format off
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
// clang-format on

namespace kiln::api {

namespace detail {
// Holds raw pointers into the awaiting coroutine's frame, and nothing with a
// destructor (docs/concurrency.md: Boost 1.74 under GCC 12 destroys an
// initiation object twice).
struct OffIoInitiation {
  boost::asio::thread_pool* pool;
  std::function<void()>* work;

  template <typename Handler>
  void operator()(Handler handler) const {
    auto ex = boost::asio::get_associated_executor(handler);
    auto h = std::make_shared<Handler>(std::move(handler));
    boost::asio::post(*pool, [w = work, h, ex] {
      (*w)();
      boost::asio::post(ex, [h] { (*h)(); });
    });
  }
};
}  // namespace detail

template <typename Fn>
boost::asio::awaitable<std::invoke_result_t<Fn&>> OffIoThread(boost::asio::thread_pool& pool,
                                                              Fn fn) {
  std::optional<std::invoke_result_t<Fn&>> out;
  std::exception_ptr failed;  // rethrown here, to the handler's caller (a 500), not the pool
  std::function<void()> work = [&] {
    try {
      out.emplace(fn());
    } catch (...) {
      failed = std::current_exception();
    }
  };
  co_await boost::asio::async_initiate<decltype(boost::asio::use_awaitable), void()>(
      detail::OffIoInitiation{&pool, &work}, boost::asio::use_awaitable);
  if (failed) std::rethrow_exception(failed);
  co_return std::move(*out);
}

}  // namespace kiln::api
