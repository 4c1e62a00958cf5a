#include "request_parser.h"

#include <algorithm>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>

namespace tollgate::http {

namespace bhttp = boost::beast::http;

RequestData::RequestData(const HandlerOptions& o) : options(o), fields(o.headers.size()) {}

void RequestData::clear() {
  method.clear();
  target.clear();
  body.clear();
  expect.clear();
  version = 11;
  for (auto& f : fields) f.clear();
  arena.clear();
  spans.clear();
}

Request RequestData::view() {
  Request r;
  r.method = method;
  r.target = target;
  r.version = version;
  r.body = body;
  field_views.assign(fields.begin(), fields.end());
  r.fields = field_views;
  header_views.clear();
  for (const auto& s : spans) {
    header_views.push_back(Header{std::string_view(arena).substr(s[0], s[1]),
                                  std::string_view(arena).substr(s[2], s[3])});
  }
  r.headers = header_views;
  return r;
}

void RequestParser::on_request_impl(bhttp::verb /*verb*/, StringView method, StringView target,
                                    int version, ErrorCode& /*ec*/) {
  d_.method.assign(method.data(), method.size());
  d_.target.assign(target.data(), target.size());
  d_.version = version;
}

void RequestParser::on_response_impl(int /*code*/, StringView /*reason*/, int /*version*/,
                                     ErrorCode& ec) {
  ec = bhttp::error::bad_version;  // not reached: this is a request parser
}

void RequestParser::on_field_impl(bhttp::field f, StringView name, StringView value,
                                  ErrorCode& /*ec*/) {
  if (f == bhttp::field::expect && d_.expect.empty()) d_.expect.assign(value.data(), value.size());
  const auto& wanted = d_.options.headers;
  for (std::size_t i = 0; i < wanted.size(); ++i) {
    if (d_.fields[i].empty() && boost::beast::iequals(name, wanted[i])) {
      d_.fields[i].assign(value.data(), value.size());
    }
  }
  if (d_.options.all_headers) {
    // Offsets fit in 32 bits: the header is limited far below 4 GiB.
    const auto at = static_cast<std::uint32_t>(d_.arena.size());
    d_.arena.append(name.data(), name.size());
    d_.arena.append(value.data(), value.size());
    d_.spans.push_back({at, static_cast<std::uint32_t>(name.size()),
                        at + static_cast<std::uint32_t>(name.size()),
                        static_cast<std::uint32_t>(value.size())});
  }
}

void RequestParser::on_body_init_impl(const boost::optional<std::uint64_t>& length,
                                      ErrorCode& /*ec*/) {
  // Beast has checked the length against the body limit; the cap is only a second guard.
  if (length && d_.options.keep_body) {
    d_.body.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(*length, 65536)));
  }
}

std::size_t RequestParser::on_body_impl(StringView body, ErrorCode& /*ec*/) {
  if (d_.options.keep_body) d_.body.append(body.data(), body.size());
  return body.size();
}

std::size_t RequestParser::on_chunk_body_impl(std::uint64_t /*remain*/, StringView body,
                                              ErrorCode& /*ec*/) {
  if (d_.options.keep_body) d_.body.append(body.data(), body.size());
  return body.size();
}

}  // namespace tollgate::http
