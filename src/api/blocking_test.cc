// api::OffIoThread: the result comes back on the io thread, and an
// exception thrown by the work reaches the awaiting handler (its caller
// answers 500) instead of ending the process on the pool's thread.
#include "api/blocking.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <stdexcept>
#include <string>
#include <thread>

namespace kiln::api {
namespace {

TEST(OffIoThreadTest, ReturnsTheResultOnTheIoThreadAndRethrowsThere) {
  boost::asio::io_context ioc;
  boost::asio::thread_pool pool(1);
  std::thread::id io_thread = std::this_thread::get_id(), work_thread, resumed_on;
  int value = 0;
  std::string caught;
  boost::asio::co_spawn(
      ioc,
      [&]() -> boost::asio::awaitable<void> {
        value = co_await OffIoThread(pool, [&] {
          work_thread = std::this_thread::get_id();
          return 42;
        });
        resumed_on = std::this_thread::get_id();
        try {
          co_await OffIoThread(pool, []() -> int { throw std::runtime_error("disk on fire"); });
        } catch (const std::exception& e) {
          caught = e.what();
        }
      },
      boost::asio::detached);
  ioc.run();
  pool.join();
  EXPECT_EQ(value, 42);
  EXPECT_NE(work_thread, io_thread);
  EXPECT_EQ(resumed_on, io_thread);
  EXPECT_EQ(caught, "disk on fire");
}

}  // namespace
}  // namespace kiln::api
