// Beast's HTTP/1.1 request parser, keeping only what the handler asked for (HandlerOptions):
// method, target, version, Expect, the body, and either the first value of a few named headers
// or every header. The strings keep their capacity from one request to the next, so a
// keep-alive connection allocates nothing per request. Owned by one Connection.
#pragma once

#include <utility>  // before any Boost header (GCC 12 + C++20)

#include <boost/beast/http/basic_parser.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tollgate/http/handler.h"
#include "tollgate/http/message.h"

namespace tollgate::http {

// What a connection keeps of the request being read.
struct RequestData {
  explicit RequestData(const HandlerOptions& o);
  void clear();
  Request view();  // views into this; valid until the next clear()

  const HandlerOptions& options;
  std::string method, target, body, expect;
  int version = 11;
  std::vector<std::string> fields;  // options.headers' first values
  // With options.all_headers: names and values back to back in `arena`, and their offsets.
  std::string arena;
  std::vector<std::array<std::uint32_t, 4>> spans;  // name at, name size, value at, value size
  std::vector<std::string_view> field_views;
  std::vector<Header> header_views;
};

class RequestParser final : public boost::beast::http::basic_parser<true> {
 public:
  explicit RequestParser(RequestData& d) : d_(d) {}

 private:
  using ErrorCode = boost::system::error_code;
  using StringView = boost::beast::string_view;

  void on_request_impl(boost::beast::http::verb, StringView method, StringView target, int version,
                       ErrorCode&) override;
  void on_response_impl(int, StringView, int, ErrorCode& ec) override;
  void on_field_impl(boost::beast::http::field, StringView name, StringView value,
                     ErrorCode&) override;
  void on_header_impl(ErrorCode&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>& length, ErrorCode&) override;
  std::size_t on_body_impl(StringView body, ErrorCode&) override;
  void on_chunk_header_impl(std::uint64_t, StringView, ErrorCode&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, StringView body, ErrorCode&) override;
  void on_finish_impl(ErrorCode&) override {}

  RequestData& d_;
};

// The parser and the request it fills, in one allocation per connection.
struct Incoming {
  explicit Incoming(const HandlerOptions& o) : data(o) {}
  RequestData data;
  std::optional<RequestParser> parser;  // re-created for each request
};

}  // namespace tollgate::http
