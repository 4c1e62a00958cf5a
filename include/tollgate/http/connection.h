// One HTTP/1.1 server connection as a state machine without sockets or clocks: events in (bytes
// read, a write done, the deadline reached, a wake-up, shutdown, the peer gone), and after each
// event the actions a driver must take, read from its accessors: write output(), read or
// watch the socket (read()), call on_timer() at deadline(), half-close (half_close()), close
// (closed()). It owns request parsing (Beast's parser), limits, keep-alive, pipelining,
// 100-continue, deferred answers and the lingering close. docs/serving.md describes it. Not
// thread-safe: one driver calls it, one event at a time.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "tollgate/http/handler.h"
#include "tollgate/http/message.h"

namespace tollgate::http {

struct Limits {
  std::size_t max_header_bytes = std::size_t{16} * 1024;
  std::size_t max_body_bytes = std::size_t{1} << 20;
  Clock::duration header_timeout = std::chrono::seconds(10);  // from a request's first byte
  Clock::duration body_timeout = std::chrono::seconds(30);    // from the end of its header
  Clock::duration idle_timeout = std::chrono::seconds(60);    // between requests; writing
  Clock::duration linger_timeout = std::chrono::seconds(2);   // lingering close
  std::size_t linger_bytes = std::size_t{64} << 20;           // dropped at most while lingering
};

// What every connection of a server shares: owned by the server, outliving its connections.
struct Settings {
  Limits limits;
  HandlerOptions request;  // what the handler asked to keep of each request
  Handler* handler = nullptr;
  std::atomic<bool> draining{false};  // shutdown: answers close their connection
};

struct Incoming;  // connection.cc: the parser and what it keeps of a request

class Connection {
 public:
  enum class State : std::uint8_t {
    kHandshake,  // the driver runs a TLS handshake
    kIdle,       // between requests: no byte of the next one yet
    kHeader,     // reading a request's header
    kBody,       // reading its body
    kContinue,   // writing "100 Continue"
    kDeferred,   // the handler answers later
    kWriting,    // writing an answer
    kLinger,     // sent our FIN after a last answer; dropping what still comes
    kClosed,
  };
  // What to do with the socket's input: nothing; read into read_buffer() and call on_read();
  // watch it without reading and call on_eof() if the peer closes.
  enum class Read : std::uint8_t { kNone, kData, kWatch };

  // With `handshake`, the driver runs a TLS handshake and then calls on_handshake().
  Connection(Settings& settings, Exchange& exchange, Clock::time_point now, bool handshake);
  ~Connection();  // cancels a deferred answer
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // ---- events ----
  void on_handshake(Clock::time_point now);
  std::span<char> read_buffer();  // at least 4 KiB; read into it, then call on_read()
  void on_read(std::size_t n, Clock::time_point now);
  void on_data(std::string_view bytes, Clock::time_point now);  // copies, then on_read()
  void on_eof(Clock::time_point now);      // the peer closed its side, or reading failed
  void on_written(Clock::time_point now);  // all of output() has been written
  void on_timer(Clock::time_point now);    // ignored before deadline()
  void on_wake(Clock::time_point now);     // one of this connection's wakers fired
  void on_stop(Clock::time_point now);     // shutdown: finish the request in hand, then close
  void abort();                            // a write failed: close now

  // ---- actions (valid until the next event) ----
  State state() const { return state_; }
  Read read() const;
  // The bytes to write, in order (none when both are empty); then on_written().
  std::array<std::string_view, 2> output() const { return output_; }
  bool writing() const { return !output_[0].empty() || !output_[1].empty(); }
  Clock::time_point deadline() const { return deadline_; }      // max(): none
  bool half_close() const { return state_ == State::kLinger; }  // FIN (TLS: close_notify)
  bool closed() const { return state_ == State::kClosed; }

 private:
  void enter_idle(Clock::time_point now);
  void parse(Clock::time_point now);
  bool on_header(Clock::time_point now);
  void dispatch(Clock::time_point now);
  void settle(Answer a, Clock::time_point now);
  bool resume(bool timed_out, Clock::time_point now);  // true: answered
  void respond(Response r, Clock::time_point now);
  void fail(int status, const std::string& message, Clock::time_point now);
  void too_large(std::string_view part, Clock::time_point now);  // "header" or "body"
  void linger(Clock::time_point now);
  void close();
  void consume(std::size_t n);
  std::size_t buffered() const { return end_ - begin_; }
  void release_buffer();

  Settings& settings_;
  Exchange& exchange_;
  std::unique_ptr<Incoming> in_;  // made for a request's first byte; dropped while deferred
  std::unique_ptr<char[]> buf_;   // bytes read and not yet parsed: [begin_, end_)
  std::size_t cap_ = 0, begin_ = 0, end_ = 0;
  std::string head_;   // the answer's status line and headers
  Response response_;  // the answer being written (keeps its body alive)
  std::array<std::string_view, 2> output_;
  std::unique_ptr<Deferred> deferred_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point resume_at_ = Clock::time_point::max();  // the deferred answer's deadline
  Clock::time_point body_started_;                          // the end of the request's header
  std::size_t linger_left_ = 0;
  State state_ = State::kIdle;
  bool keep_alive_ = true, http10_ = false, head_only_ = false, close_after_ = false;
};

}  // namespace tollgate::http
