// The application's side of the HTTP core: a Handler answers each request, now or later (a
// Deferred answer, resumed when a Waker fires or its deadline passes). Handler and Deferred
// calls run on the worker thread that owns the connection, one at a time per connection;
// Handler::handle() runs concurrently for different connections. Waker::wake() may be called
// from any thread.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/http/message.h"

namespace tollgate::http {

using Clock = std::chrono::steady_clock;

// Wakes one connection whose answer is deferred. Thread-safe; wake() only schedules work: the
// connection's Deferred::resume() runs later, on its own worker.
class Waker {
 public:
  virtual ~Waker() = default;
  virtual void wake() = 0;
};

// An answer given later (a long-poll). The connection holds it until it answers or closes.
class Deferred {
 public:
  virtual ~Deferred() = default;
  // After a wake-up, or once the deadline has passed (`timed_out`): the answer, or nullopt to
  // keep waiting. After a timeout, nullopt promises that a wake-up is already on its way.
  virtual std::optional<Response> resume(bool timed_out) = 0;
  // The connection closes unanswered (the client left, shutdown, an error): let go of every
  // registration. Called at most once, and nothing is called after it.
  virtual void cancel() = 0;
};

// What Handler::handle() gives back: a response now, or a Deferred and when to time it out.
struct Answer {
  Response response;
  std::unique_ptr<Deferred> later;
  Clock::time_point deadline = Clock::time_point::max();

  static Answer now(Response r) {
    Answer a;
    a.response = std::move(r);
    return a;
  }
  static Answer defer(std::unique_ptr<Deferred> d, Clock::time_point deadline) {
    Answer a;
    a.later = std::move(d);
    a.deadline = deadline;
    return a;
  }
};

// The connection a request came on, as its handler sees it.
class Exchange {
 public:
  // A waker for this connection, to register wherever a deferred answer will be ended from.
  virtual std::shared_ptr<Waker> waker() = 0;
  // The SPIFFE principal ("<td>/ns/<ns>/sa/<sa>", no "spiffe://") of the client certificate
  // the TLS handshake verified against the server's client CA; empty without one.
  virtual std::string_view peer_principal() const { return {}; }

 protected:
  ~Exchange() = default;
};

// What a handler needs of each request besides method, target and version.
struct HandlerOptions {
  // Keep the first value of these headers (matched in any case): Request::fields. Cheap.
  std::vector<std::string> headers;
  // Keep every header, in order, repeated ones too: Request::headers.
  bool all_headers = false;
  // False: bodies are still read (and limited) but dropped.
  bool keep_body = true;
};

class Handler {
 public:
  virtual ~Handler() = default;
  virtual HandlerOptions options() const { return {}; }  // read once, by the Server constructor
  virtual Answer handle(const Request& r, Exchange& x) = 0;
  // The server answered `status` itself, without a handle() call (a malformed or too large
  // request, a connection over the cap): for the handler's metrics.
  virtual void refused(int status) { (void)status; }
  // Shutdown: every connection has been told to finish. End deferred answers now (wake them).
  virtual void drain() {}
};

}  // namespace tollgate::http
