#include <utility>  // before any Boost header (GCC 12 + C++20)

#include "tollgate/http/connection.h"

#include <algorithm>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/status.hpp>
#include <cstring>

#include "request_parser.h"
#include "tollgate/util/log.h"

namespace tollgate::http {

namespace {

namespace bhttp = boost::beast::http;

constexpr std::size_t kReadChunk = 4096;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

bool has_no_body(int status) { return status < 200 || status == 204 || status == 304; }

// The status line and headers of `r`.
void write_head(std::string& head, const Response& r, std::size_t body_size, bool close,
                bool http10) {
  head.clear();
  head += "HTTP/1.1 ";
  head += std::to_string(r.status);
  head += ' ';
  const auto reason = bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(r.status)));
  head.append(reason.data(), reason.size());
  head += "\r\n";
  if (!has_no_body(r.status)) {
    head += "Content-Type: ";
    head += r.content_type;
    head += "\r\nContent-Length: ";
    head += std::to_string(body_size);
    head += "\r\n";
  }
  head += r.headers;
  if (close) {
    head += "Connection: close\r\n";
  } else if (http10) {
    head += "Connection: keep-alive\r\n";
  }
  head += "\r\n";
}

Response internal_error() { return error_response(500, "internal error"); }

// Calls into the handler: an exception is logged and `fallback()` stands for the result.
template <typename F, typename G>
auto call_handler(const char* what, F&& f, G&& fallback) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    util::log_error(what, {{"error", e.what()}});
  } catch (...) {
    util::log_error(what);
  }
  return fallback();
}

}  // namespace

Connection::Connection(Settings& settings, Exchange& exchange, Clock::time_point now,
                       bool handshake)
    : settings_(settings), exchange_(exchange) {
  if (handshake) {
    state_ = State::kHandshake;
    deadline_ = now + settings_.limits.header_timeout;
  } else {
    enter_idle(now);
  }
}

Connection::~Connection() { close(); }

Connection::Read Connection::read() const {
  switch (state_) {
    case State::kIdle:
    case State::kHeader:
    case State::kBody:
    case State::kLinger:
      return Read::kData;
    case State::kDeferred:
      return Read::kWatch;
    default:
      return Read::kNone;
  }
}

void Connection::on_handshake(Clock::time_point now) {
  if (state_ == State::kHandshake) enter_idle(now);
}

std::span<char> Connection::read_buffer() {
  if (begin_ == end_) begin_ = end_ = 0;
  if (cap_ - end_ < kReadChunk && begin_ > 0) {
    std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (cap_ - end_ < kReadChunk) {
    const std::size_t cap = std::max(2 * cap_, end_ + kReadChunk);
    auto bigger = std::make_unique_for_overwrite<char[]>(cap);
    if (end_ > 0) std::memcpy(bigger.get(), buf_.get(), end_);
    buf_ = std::move(bigger);
    cap_ = cap;
  }
  return {buf_.get() + end_, cap_ - end_};
}

void Connection::on_read(std::size_t n, Clock::time_point now) {
  if (state_ == State::kLinger) {  // dropped, never buffered
    if (n >= linger_left_) return close();
    linger_left_ -= n;
    return;
  }
  if (state_ == State::kClosed) return;
  end_ += n;  // in any other state the bytes wait for their turn (pipelining)
  if (state_ == State::kIdle || state_ == State::kHeader || state_ == State::kBody) parse(now);
}

void Connection::on_data(std::string_view bytes, Clock::time_point now) {
  while (!bytes.empty() && state_ != State::kClosed) {
    const auto into = read_buffer();
    const std::size_t n = std::min(into.size(), bytes.size());
    std::memcpy(into.data(), bytes.data(), n);
    bytes.remove_prefix(n);
    on_read(n, now);
  }
}

void Connection::on_eof(Clock::time_point /*now*/) {
  if (state_ == State::kWriting || state_ == State::kContinue) {
    close_after_ = true;  // the answer still goes out; the connection ends after it
    return;
  }
  close();
}

void Connection::on_written(Clock::time_point now) {
  output_ = {};
  if (state_ == State::kContinue) {
    state_ = State::kBody;
    deadline_ = body_started_ + settings_.limits.body_timeout;
    return parse(now);
  }
  if (state_ != State::kWriting) return;
  response_ = Response{};
  if (close_after_) return linger(now);
  enter_idle(now);
}

void Connection::on_timer(Clock::time_point now) {
  if (now < deadline_ || state_ == State::kClosed) return;
  if (state_ != State::kDeferred) return close();  // idle too long, slow header/body/write
  deadline_ = Clock::time_point::max();            // unless it answers, a wake-up is on its way
  resume(true, now);
}

void Connection::on_wake(Clock::time_point now) {
  if (state_ != State::kDeferred) return;
  if (!resume(false, now)) deadline_ = resume_at_;  // parked anew: the deadline holds
}

void Connection::on_stop(Clock::time_point /*now*/) {
  close_after_ = true;
  if (state_ == State::kIdle) close();
  // A request in hand is answered (and its answer says Connection: close); a deferred answer
  // is ended by the handler's drain().
}

void Connection::abort() { close(); }

void Connection::enter_idle(Clock::time_point now) {
  if (close_after_ || settings_.draining.load(std::memory_order_relaxed)) return close();
  state_ = State::kIdle;
  deadline_ = now + settings_.limits.idle_timeout;
  if (buffered() > 0) parse(now);  // a pipelined request
}

// Feeds the buffered bytes to the parser until the request is complete, an error answers, or
// more bytes are needed; the header (then body) deadline counts from the request's first byte
// (then from the end of its header).
void Connection::parse(Clock::time_point now) {
  if (buffered() == 0) return;
  if (!in_) in_ = std::make_unique<Incoming>(settings_.request);
  auto& in = *in_;
  if (state_ == State::kIdle) {  // the first bytes of a request
    state_ = State::kHeader;
    deadline_ = now + settings_.limits.header_timeout;
    in.data.clear();
    in.parser.emplace(in.data);
    in.parser->header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(settings_.limits.max_header_bytes, UINT32_MAX)));
    in.parser->body_limit(std::uint64_t{settings_.limits.max_body_bytes});
  }
  while (!in.parser->is_done()) {
    if (buffered() == 0) return;
    boost::system::error_code ec;
    const std::size_t used =
        in.parser->put(boost::asio::const_buffer(buf_.get() + begin_, buffered()), ec);
    consume(used);
    if (ec == bhttp::error::need_more || (!ec && used == 0)) return;
    if (ec == bhttp::error::header_limit) return too_large("header", now);
    if (ec == bhttp::error::body_limit) return too_large("body", now);
    if (ec) return fail(400, "malformed HTTP request: " + ec.message(), now);
    if (state_ == State::kHeader && in.parser->is_header_done() && !on_header(now)) return;
  }
  dispatch(now);
}

// False: the connection goes on elsewhere (an error answer, or "100 Continue" being written).
bool Connection::on_header(Clock::time_point now) {
  auto& parser = *in_->parser;
  const auto length = parser.content_length();
  if (length && *length > settings_.limits.max_body_bytes) {
    too_large("body", now);
    return false;
  }
  state_ = State::kBody;
  body_started_ = now;
  deadline_ = now + settings_.limits.body_timeout;
  if (parser.is_done()) return true;
  // "100 Continue" to an HTTP/1.1 client waiting for it (not one already sending its body).
  if (buffered() == 0 && in_->data.version >= 11 &&
      boost::beast::iequals(in_->data.expect, "100-continue")) {
    state_ = State::kContinue;
    output_ = {kContinue, {}};
    return false;
  }
  return true;
}

void Connection::dispatch(Clock::time_point now) {
  auto& in = *in_;
  keep_alive_ = in.parser->keep_alive();
  http10_ = in.data.version == 10;
  head_only_ = in.data.method == "HEAD";
  in.parser.reset();
  state_ = State::kWriting;  // no reads while the handler answers
  settle(call_handler(
             "request failed", [&] { return settings_.handler->handle(in.data.view(), exchange_); },
             [] { return Answer::now(internal_error()); }),
         now);
}

void Connection::settle(Answer a, Clock::time_point now) {
  if (!a.later) return respond(std::move(a.response), now);
  deferred_ = std::move(a.later);
  state_ = State::kDeferred;
  resume_at_ = a.deadline;
  deadline_ = a.deadline;
  // A parked connection holds as little as it can: the parser and the request's strings are
  // made again for the next request.
  in_.reset();
  if (buffered() == 0) release_buffer();
}

bool Connection::resume(bool timed_out, Clock::time_point now) {
  auto r = call_handler(
      "resuming a deferred answer failed", [&] { return deferred_->resume(timed_out); },
      [] { return std::optional<Response>(internal_error()); });
  if (!r) return false;
  deferred_.reset();
  respond(std::move(*r), now);
  return true;
}

void Connection::respond(Response r, Clock::time_point now) {
  state_ = State::kWriting;
  const bool close = close_after_ || !keep_alive_ || settings_.draining.load();
  close_after_ = close;
  response_ = std::move(r);  // the body's bytes are viewed from here until written
  const bool no_body = has_no_body(response_.status);
  const auto body = no_body ? std::string_view() : response_.body_bytes();
  write_head(head_, response_, body.size(), close, http10_);
  output_ = {head_, head_only_ ? std::string_view() : body};
  deadline_ = now + settings_.limits.idle_timeout;
}

// Answers an error and closes the connection after it.
void Connection::fail(int status, const std::string& message, Clock::time_point now) {
  close_after_ = true;
  if (in_) in_->parser.reset();
  head_only_ = false;
  http10_ = false;
  settings_.handler->refused(status);
  respond(error_response(status, message), now);
}

// 413 for a request whose header or body is over its limit.
void Connection::too_large(std::string_view part, Clock::time_point now) {
  const auto limit =
      part == "header" ? settings_.limits.max_header_bytes : settings_.limits.max_body_bytes;
  fail(413, "request " + std::string(part) + " larger than " + std::to_string(limit) + " bytes",
       now);
}

// A lingering close: after our FIN, read and drop what the client still sends (say, a body we
// refused with 413) until it closes, for a bounded time and number of bytes. Closing with
// unread data would reset the connection, and the client could lose the answer.
void Connection::linger(Clock::time_point now) {
  state_ = State::kLinger;
  deadline_ = now + settings_.limits.linger_timeout;
  linger_left_ = settings_.limits.linger_bytes;
  begin_ = end_ = 0;
}

void Connection::close() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  output_ = {};
  deadline_ = Clock::time_point::max();
  if (deferred_) {
    call_handler(
        "cancelling a deferred answer failed", [&] { deferred_->cancel(); }, [] {});
    deferred_.reset();
  }
}

void Connection::consume(std::size_t n) {
  begin_ += n;
  if (begin_ == end_) begin_ = end_ = 0;
}

void Connection::release_buffer() {
  buf_.reset();
  cap_ = begin_ = end_ = 0;
}

}  // namespace tollgate::http
