// HTTP/1.1 requests and responses as the server core hands them to a Handler and takes them
// back: plain values, no networking. A Request's views point into its connection's buffers and
// are valid only during the Handler::handle() call that receives it. Any thread.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace tollgate::http {

struct Header {
  std::string_view name, value;
};

struct Request {
  std::string_view method;  // "GET"
  std::string_view target;  // "/v1/tables/default/web-1?wait=5"
  int version = 11;         // 10 or 11
  std::string_view body;    // empty unless HandlerOptions::keep_body
  // The first value of each header named in HandlerOptions::headers, in that order ("" when
  // the request has none).
  std::span<const std::string_view> fields;
  // Every header in the order received, repeated ones kept: only with
  // HandlerOptions::all_headers.
  std::span<const Header> headers;
};

struct Response {
  int status = 200;
  std::string headers;  // extra header lines, each "Name: value\r\n"
  std::string body;
  // A body owned elsewhere (say, a table's wire JSON), kept alive by `keep`; used when `keep`
  // is set.
  std::shared_ptr<const void> keep;
  std::string_view view;
  const char* content_type = "application/json";
  std::string_view body_bytes() const { return keep ? view : std::string_view(body); }
};

// {"error": "<message>"} with `status`.
Response error_response(int status, std::string_view message);

}  // namespace tollgate::http
