// libFuzzer target: the HTTP connection state machine under arbitrary byte streams and events.
// The input is a script: one byte of settings, then operations (the peer sends bytes, time
// passes, writes complete, a wake-up, the peer closes, shutdown, a write fails). A model driver
// honours the machine's read interest as a socket would. Nothing may crash, leak or trip a
// sanitizer; the machine never waits without a deadline; what it writes is a well-formed sequence
// of responses, one per answer given (but the one cut off by closing); and once the peer has
// closed, every connection ends closed. test/fuzz/corpus/http holds the seeds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "tollgate/http/connection.h"
#include "tollgate/util/log.h"

namespace {

using namespace std::chrono_literals;
using tollgate::http::Clock;
using tollgate::http::Connection;

void check(bool ok) {
  if (!ok) std::abort();
}

struct Waker final : tollgate::http::Waker {
  void wake() override {}
};

struct Exchange final : tollgate::http::Exchange {
  std::shared_ptr<tollgate::http::Waker> waker() override { return waker_; }
  std::shared_ptr<Waker> waker_ = std::make_shared<Waker>();
};

// Answers at once, later (targets with "defer"), or throws (targets with "throw"). Records, in
// the order the answers are written, whether each goes without a body (HEAD).
class Handler final : public tollgate::http::Handler {
 public:
  struct Later final : tollgate::http::Deferred {
    Later(Handler& h, bool head, bool promise) : h_(h), head_(head), promise_(promise) {
      ++h_.deferred_alive;
    }
    ~Later() override { --h_.deferred_alive; }
    std::optional<tollgate::http::Response> resume(bool timed_out) override {
      check(!cancelled_);
      if (timed_out && promise_ && !h_.wake_due) {
        h_.wake_due = true;  // "a wake-up is on its way": the driver must deliver it
        return std::nullopt;
      }
      h_.wake_due = false;
      h_.head_only.push_back(head_);
      tollgate::http::Response r;
      r.status = timed_out ? 304 : 200;
      r.body = "later";
      return r;
    }
    void cancel() override {
      check(!cancelled_);
      cancelled_ = true;
      h_.wake_due = false;
    }
    Handler& h_;
    bool head_, promise_, cancelled_ = false;
  };

  tollgate::http::Answer handle(const tollgate::http::Request& r,
                                tollgate::http::Exchange&) override {
    const bool head = r.method == "HEAD";
    if (r.target.find("defer") != std::string_view::npos) {
      const auto wait = std::chrono::seconds(r.target.size() % 5);
      return tollgate::http::Answer::defer(
          std::make_unique<Later>(*this, head, r.target.size() % 2 == 0), *now + wait);
    }
    head_only.push_back(head);
    if (r.target.find("throw") != std::string_view::npos) throw std::runtime_error("fuzz");
    tollgate::http::Response out;
    out.body.assign(r.body.size() % 100, 'b');
    for (const auto& h : r.headers) out.body.append(h.name.size() % 3, 'h');
    return tollgate::http::Answer::now(std::move(out));
  }
  void refused(int) override { head_only.push_back(false); }

  const Clock::time_point* now = nullptr;
  std::deque<bool> head_only;  // one per answer not yet seen in the output
  bool wake_due = false;
  int deferred_alive = 0;
};

// Checks the written bytes as a client would read them: whole responses only.
class Reader {
 public:
  explicit Reader(Handler& h) : h_(h) {}
  void add(std::string_view bytes) { buf_.append(bytes); }
  // Consumes the complete responses; returns how many final (non-1xx) ones.
  int drain() {
    int finals = 0;
    for (;;) {
      const auto end = buf_.find("\r\n\r\n");
      if (end == std::string::npos) return finals;
      check(buf_.starts_with("HTTP/1.1 ") && buf_.size() > 12);
      const int status = std::atoi(buf_.c_str() + 9);
      check(status >= 100 && status <= 599);
      std::size_t body = 0;
      if (status >= 200) {
        check(!h_.head_only.empty());
        const bool head = h_.head_only.front();
        h_.head_only.pop_front();
        const auto cl = buf_.find("\r\nContent-Length: ");
        if (cl != std::string::npos && cl < end && !head && status != 304 && status != 204) {
          body = std::strtoul(buf_.c_str() + cl + 18, nullptr, 10);
        }
        ++finals;
      }
      check(buf_.size() >= end + 4 + body);  // a response is written whole
      buf_.erase(0, end + 4 + body);
    }
  }
  bool empty() const { return buf_.empty(); }

 private:
  Handler& h_;
  std::string buf_;
};

// The machine, its handler, and a model driver and peer.
struct Run {
  explicit Run(std::uint8_t flags) : reader(handler) {
    handler.now = &now;
    tollgate::http::HandlerOptions o;
    o.all_headers = (flags & 1) != 0;
    o.keep_body = (flags & 2) == 0;
    o.headers = {"expect", "x-a"};
    settings.request = o;
    settings.handler = &handler;
    settings.limits.max_header_bytes = (flags & 8) != 0 ? 96 : 2048;
    settings.limits.max_body_bytes = (flags & 16) != 0 ? 8 : 512;
    settings.limits.linger_bytes = 300;
    c = std::make_unique<Connection>(settings, exchange, now, (flags & 4) != 0);
  }

  // One event. An answer being written is lost only when the connection closes before the
  // write completes (`written`: this event says it did).
  template <typename F>
  void event(F&& f, bool written = false) {
    const auto out = c->output();
    const bool final_pending = !written && c->writing() && !out[0].starts_with("HTTP/1.1 100 ");
    f();
    if (c->closed() && final_pending) {
      check(!handler.head_only.empty());
      handler.head_only.pop_back();  // cut off: never written
    }
    deliver();
    check(c->closed() || c->writing() || c->deadline() != Clock::time_point::max() ||
          (c->state() == Connection::State::kDeferred && handler.wake_due));
  }

  // What the socket would hand over: bytes when asked for, the end when nothing is left.
  void deliver() {
    while (!c->closed() && c->read() == Connection::Read::kData && !inbox.empty()) {
      const auto into = c->read_buffer();
      const std::size_t n = std::min(into.size(), inbox.size());
      inbox.copy(into.data(), n);
      inbox.erase(0, n);
      c->on_read(n, now);
    }
    if (!c->closed() && peer_closed && inbox.empty() && c->read() != Connection::Read::kNone) {
      c->on_eof(now);
    }
  }

  void write_all() {
    while (c->writing()) {
      const auto out = c->output();
      reader.add(out[0]);
      reader.add(out[1]);
      reader.drain();
      event([&] { c->on_written(now); }, true);
    }
  }

  void fire(Clock::time_point at) {
    now = std::max(now, at);
    event([&] { c->on_timer(now); });
  }

  Clock::time_point now = Clock::time_point() + 1000h;
  tollgate::http::Settings settings;
  Handler handler;
  Exchange exchange;
  Reader reader;
  std::unique_ptr<Connection> c;
  std::string inbox;  // sent by the peer, not yet read
  bool peer_closed = false;
};

// One operation of the script; returns the bytes it used after its opcode.
std::size_t step(Run& r, std::uint8_t op, std::string_view rest) {
  switch (op % 8) {
    case 0:
    case 1:
    case 2: {  // the peer sends 1..256 bytes
      if (rest.empty()) return 0;
      const std::size_t n = std::min<std::size_t>(rest.size() - 1, 1u + std::uint8_t(rest[0]));
      if (!r.peer_closed) r.inbox.append(rest.substr(1, n));
      r.event([] {});
      return 1 + n;
    }
    case 3:  // time reaches the deadline
      if (r.c->deadline() != Clock::time_point::max()) r.fire(r.c->deadline());
      return 0;
    case 4:  // time passes (0..25.5 s), maybe before the deadline
      r.fire(r.now + std::chrono::milliseconds(100 * (rest.empty() ? 1 : std::uint8_t(rest[0]))));
      return rest.empty() ? 0 : 1;
    case 5:
      r.write_all();
      return 0;
    case 6:  // a wake-up (spurious ones too)
      r.event([&] { r.c->on_wake(r.now); });
      return 0;
    default: {
      const int what = rest.empty() ? 0 : std::uint8_t(rest[0]) % 5;
      if (what == 0) r.peer_closed = true;
      if (what == 1) r.event([&] { r.c->on_stop(r.now); });
      if (what == 2) r.settings.draining = true;
      if (what == 3) r.event([&] { r.c->on_handshake(r.now); });
      if (what == 4 && r.c->writing()) r.event([&] { r.c->abort(); });  // a write failed
      r.event([] {});
      return rest.empty() ? 0 : 1;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > (1u << 16)) return 0;
  // Handlers that throw are logged as errors; the fuzzer makes them by the thousand.
  tollgate::util::set_log_level(tollgate::util::LogLevel::kOff);
  const std::string_view script(reinterpret_cast<const char*>(data), size);
  int live = 0;
  {
    Run r(data[0]);
    std::size_t at = 1;
    while (at < script.size()) {
      const auto op = static_cast<std::uint8_t>(script[at++]);
      at += step(r, op, script.substr(at));
    }
    // The peer leaves; the driver finishes what it can. Every connection must end closed.
    r.peer_closed = true;
    r.event([&] { r.c->on_handshake(r.now); });
    for (int i = 0; i < 10000 && !r.c->closed(); ++i) {
      if (r.c->writing()) {
        r.write_all();
      } else if (r.handler.wake_due) {
        r.event([&] { r.c->on_wake(r.now); });
      } else {
        check(r.c->deadline() != Clock::time_point::max());
        r.fire(r.c->deadline());
      }
    }
    check(r.c->closed());
    r.reader.drain();
    check(r.reader.empty());
    check(r.handler.head_only.empty());  // every answer given was written whole
    live = r.handler.deferred_alive;
  }
  check(live == 0);
  return 0;
}
