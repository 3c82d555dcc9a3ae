// What the server and the push client do without awaiting. Every co_await
// of an asio operation costs a round through the io context's queue, and
// each round an epoll_wait, even when the operation completed at once; a
// message is mostly there in one read, and mostly fits the socket's buffer
// when written. These helpers take what is there, or what the socket takes,
// and leave the rest to the awaited Beast and asio operations.
// For http/server.cc and http/client.cc only (it includes Beast).
#pragma once

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace kiln::http {

// Feeds `parser` what `buffer` holds: the header, or (`whole`) the whole
// message. True when that part is parsed or `*ec` says why not; false when
// more bytes must be read (then `*ec` is clear and the parser has taken
// nothing it cannot take again, so Beast's async_read_header or async_read
// go on from there).
template <bool isRequest, typename Body, typename Allocator>
bool ParseBuffered(boost::beast::http::parser<isRequest, Body, Allocator>& parser,
                   boost::beast::flat_buffer& buffer, bool whole, boost::system::error_code* ec) {
  parser.eager(whole);
  while (whole ? !parser.is_done() : !parser.is_header_done()) {
    if (buffer.size() == 0) return false;
    size_t used = parser.put(buffer.data(), *ec);
    buffer.consume(used);
    if (*ec == boost::beast::http::error::need_more || (!*ec && used == 0)) {
      *ec = {};
      return false;
    }
    if (*ec) return true;
  }
  return true;
}

// Writes what the non-blocking socket takes of `out` now and drops it from
// `out`; what is left (asio::buffer_size(out)) must be written by awaiting.
// A full socket is not an error.
inline void WriteNow(boost::asio::ip::tcp::socket& s, std::array<boost::asio::const_buffer, 2>& out,
                     boost::system::error_code* ec) {
  size_t n = s.write_some(out, *ec);
  if (*ec == boost::asio::error::would_block || *ec == boost::asio::error::try_again) {
    *ec = {};
    n = 0;
  }
  for (auto& b : out) {
    size_t drop = std::min(n, b.size());
    b += drop;
    n -= drop;
  }
}

}  // namespace kiln::http
