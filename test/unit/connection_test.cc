// The HTTP connection state machine without sockets or sleeps: bytes and a fake clock in, the
// actions it asks for out. The Harness plays a driver whose writes always complete at once.
#include "tollgate/http/connection.h"

#include <catch2/catch.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using http::Clock;
using http::Connection;
using State = Connection::State;
using Read = Connection::Read;

const Clock::time_point kT0 = Clock::time_point() + 1000h;

struct CountingWaker final : http::Waker {
  void wake() override { ++wakes; }
  int wakes = 0;
};

struct FakeExchange final : http::Exchange {
  std::shared_ptr<http::Waker> waker() override { return waker_; }
  std::shared_ptr<CountingWaker> waker_ = std::make_shared<CountingWaker>();
};

// What the handler saw of one request.
struct Seen {
  std::string method, target, body;
  int version = 0;
  std::vector<std::string> fields;
  std::vector<std::pair<std::string, std::string>> headers;
};

// Answers "<method> <target> <body>" with 200; /defer answers later (200 "woken" after a
// wake-up, 304 on timeout, or nothing on timeout with `wake_on_its_way`); /throw throws.
class TestHandler final : public http::Handler {
 public:
  struct Later final : http::Deferred {
    explicit Later(TestHandler& h) : h_(h) {}
    std::optional<http::Response> resume(bool timed_out) override {
      ++h_.resumed;
      if (timed_out && h_.wake_on_its_way) return std::nullopt;
      http::Response r;
      r.status = timed_out ? 304 : 200;
      r.body = "woken";
      return r;
    }
    void cancel() override { ++h_.cancelled; }
    TestHandler& h_;
  };

  http::HandlerOptions options() const override { return opts; }
  http::Answer handle(const http::Request& r, http::Exchange&) override {
    Seen s{std::string(r.method), std::string(r.target), std::string(r.body), r.version, {}, {}};
    for (auto f : r.fields) s.fields.emplace_back(f);
    for (auto h : r.headers) s.headers.emplace_back(h.name, h.value);
    seen.push_back(s);
    if (r.target == "/throw") throw std::runtime_error("boom");
    if (r.target.starts_with("/defer")) {
      return http::Answer::defer(std::make_unique<Later>(*this), *clock + defer_for);
    }
    http::Response out;
    out.body = s.method + " " + s.target + " " + s.body;
    if (r.target == "/none-match") out.status = 304;
    return http::Answer::now(std::move(out));
  }
  void refused(int status) override { refusals.push_back(status); }

  http::HandlerOptions opts;
  const Clock::time_point* clock = nullptr;
  Clock::duration defer_for = 5s;
  bool wake_on_its_way = false;
  std::vector<Seen> seen;
  std::vector<int> refusals;
  int resumed = 0, cancelled = 0;
};

http::Limits small_limits() {
  http::Limits l;
  l.max_header_bytes = 1024;
  l.max_body_bytes = 1024;
  l.header_timeout = 10s;
  l.body_timeout = 20s;
  l.idle_timeout = 60s;
  l.linger_timeout = 2s;
  l.linger_bytes = 64 * 1024;
  return l;
}

// A connection, its handler, and a driver whose writes complete at once.
struct Harness {
  explicit Harness(http::Limits limits = small_limits(), http::HandlerOptions o = {},
                   bool handshake = false) {
    handler.opts = std::move(o);
    handler.clock = &now;
    settings.limits = limits;
    settings.request = handler.opts;
    settings.handler = &handler;
    c = std::make_unique<Connection>(settings, exchange, now, handshake);
  }
  void flush() {
    while (c->writing()) {
      const auto o = c->output();
      out.append(o[0]);
      out.append(o[1]);
      c->on_written(now);
    }
  }
  void send(std::string_view bytes) {
    c->on_data(bytes, now);
    flush();
  }
  void wake() {
    c->on_wake(now);
    flush();
  }
  void at(Clock::duration since_start) {
    now = kT0 + since_start;
    c->on_timer(now);
    flush();
  }
  std::string take() { return std::exchange(out, {}); }

  Clock::time_point now = kT0;
  http::Settings settings;
  TestHandler handler;
  FakeExchange exchange;
  std::unique_ptr<Connection> c;
  std::string out;  // every byte written
};

struct Reply {
  int status = 0;
  std::string head, body;
};

// Splits written bytes into responses (Content-Length bodies; none for 1xx, 204 and 304).
std::vector<Reply> replies(std::string_view out) {
  std::vector<Reply> all;
  while (!out.empty()) {
    const auto end = out.find("\r\n\r\n");
    REQUIRE(end != std::string_view::npos);
    Reply r;
    r.head = std::string(out.substr(0, end + 4));
    r.status = std::stoi(r.head.substr(9, 3));
    out.remove_prefix(end + 4);
    const auto cl = r.head.find("Content-Length: ");
    if (cl != std::string::npos) {
      const auto n = std::stoul(r.head.substr(cl + 16));
      REQUIRE(out.size() >= n);
      r.body = std::string(out.substr(0, n));
      out.remove_prefix(n);
    }
    all.push_back(r);
  }
  return all;
}

std::string get(const std::string& target, const std::string& headers = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: x\r\n" + headers + "\r\n";
}

std::string post(const std::string& target, const std::string& body) {
  return "POST " + target + " HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

// ---- requests and answers ---------------------------------------------------------------

TEST_CASE("A request is answered with its status, type, length and body, then the next awaited") {
  Harness h;
  h.send(get("/a"));
  CHECK(h.take() ==
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\nGET /a ");
  CHECK(h.c->state() == State::kIdle);
  CHECK(h.c->read() == Read::kData);
  CHECK(h.c->deadline() == kT0 + 60s);
  REQUIRE(h.handler.seen.size() == 1);
  CHECK(h.handler.seen[0].version == 11);
}

TEST_CASE(
    "Pipelined requests split at every byte boundary are answered in order, as in one piece") {
  const std::string stream =
      get("/a") + post("/b", "hello") +
      "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" +
      get("/d", "If-None-Match: \"x\"\r\n");
  Harness whole;
  whole.send(stream);
  const auto expected = whole.take();
  const auto answers = replies(expected);
  REQUIRE(answers.size() == 4);
  CHECK(answers[0].body == "GET /a ");
  CHECK(answers[1].body == "POST /b hello");
  CHECK(answers[2].body == "POST /c abcde");
  CHECK(answers[3].body == "GET /d ");
  for (std::size_t cut = 1; cut < stream.size(); ++cut) {
    Harness h;
    h.send(stream.substr(0, cut));
    h.send(stream.substr(cut));
    INFO("split at byte " << cut);
    REQUIRE(h.take() == expected);
    CHECK(h.c->state() == State::kIdle);
  }
  Harness bytewise;
  for (char ch : stream) bytewise.send(std::string(1, ch));
  CHECK(bytewise.take() == expected);
}

TEST_CASE("While an answer is being written nothing is read and the next request waits") {
  Harness h;
  h.c->on_data(get("/a") + get("/b"), h.now);
  REQUIRE(h.c->writing());
  CHECK(h.c->state() == State::kWriting);
  CHECK(h.c->read() == Read::kNone);
  CHECK(h.c->deadline() == kT0 + 60s);  // a write must finish within the idle timeout
  CHECK(h.handler.seen.size() == 1);
  CHECK(std::string(h.c->output()[1]) == "GET /a ");
  h.c->on_written(h.now);
  REQUIRE(h.c->writing());
  CHECK(std::string(h.c->output()[1]) == "GET /b ");
  CHECK(h.handler.seen.size() == 2);
}

TEST_CASE("An answer not written within the idle timeout closes the connection") {
  Harness h;
  h.c->on_data(get("/a"), h.now);
  REQUIRE(h.c->writing());
  h.now = kT0 + 59s;
  h.c->on_timer(h.now);
  CHECK(h.c->writing());
  h.now = kT0 + 60s;
  h.c->on_timer(h.now);
  CHECK(h.c->closed());
  CHECK_FALSE(h.c->writing());
}

TEST_CASE("HTTP/1.0 closes after the answer unless it asks for keep-alive, which is confirmed") {
  Harness once;
  once.send("GET /a HTTP/1.0\r\n\r\n");
  auto r = replies(once.take());
  REQUIRE(r.size() == 1);
  CHECK(r[0].head.find("Connection: close\r\n") != std::string::npos);
  CHECK(once.c->state() == State::kLinger);
  Harness kept;
  kept.send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  r = replies(kept.take());
  REQUIRE(r.size() == 1);
  CHECK(r[0].head.find("Connection: keep-alive\r\n") != std::string::npos);
  CHECK(kept.c->state() == State::kIdle);
}

TEST_CASE("HEAD answers carry the body's length but not the body; 304 carries neither") {
  Harness h;
  h.send("HEAD /a HTTP/1.1\r\n\r\n" + get("/none-match") + get("/b"));
  const auto out = h.take();
  CHECK(out.starts_with(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n"
      "HTTP/1.1 304 Not Modified\r\n\r\n"));
  CHECK(out.ends_with("GET /b "));
}

TEST_CASE("A handler that throws gets a 500 answer and the connection carries on") {
  Harness h;
  h.send(get("/throw") + get("/a"));
  const auto r = replies(h.take());
  REQUIRE(r.size() == 2);
  CHECK(r[0].status == 500);
  CHECK(r[0].body == R"({"error":"internal error"})");
  CHECK(r[1].body == "GET /a ");
}

// ---- headers and bodies ------------------------------------------------------------------

TEST_CASE("Only the headers asked for are kept: their first value, matched in any case") {
  http::HandlerOptions o;
  o.headers = {"if-none-match", "prefer"};
  Harness h(small_limits(), o);
  h.send(get("/a", "PREFER: wait=5\r\nIf-None-Match: \"1\"\r\nif-none-match: \"2\"\r\n"));
  REQUIRE(h.handler.seen.size() == 1);
  CHECK(h.handler.seen[0].fields == std::vector<std::string>{"\"1\"", "wait=5"});
  CHECK(h.handler.seen[0].headers.empty());
  h.send(get("/b"));  // absent headers read as empty, not as the last request's
  CHECK(h.handler.seen[1].fields == std::vector<std::string>{"", ""});
}

TEST_CASE("With all_headers every header is kept in order, repeated ones too") {
  http::HandlerOptions o;
  o.all_headers = true;
  Harness h(small_limits(), o);
  h.send(get("/a", "X-A: 1\r\nx-a: 2\r\nCookie: c\r\n") + get("/b", "Y: 3\r\n"));
  REQUIRE(h.handler.seen.size() == 2);
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  CHECK(h.handler.seen[0].headers ==
        Pairs{{"Host", "x"}, {"X-A", "1"}, {"x-a", "2"}, {"Cookie", "c"}});
  CHECK(h.handler.seen[1].headers == Pairs{{"Host", "x"}, {"Y", "3"}});
}

TEST_CASE("Without keep_body the body is read and dropped, and its limit still holds") {
  http::HandlerOptions o;
  o.keep_body = false;
  Harness h(small_limits(), o);
  h.send(post("/a", "hello") + get("/b"));
  REQUIRE(h.handler.seen.size() == 2);
  CHECK(h.handler.seen[0].body.empty());
  CHECK(h.handler.seen[1].target == "/b");
  h.take();
  h.send(post("/c", std::string(2000, 'x')));
  CHECK(replies(h.take()).at(0).status == 413);
}

TEST_CASE("A client expecting 100-continue is told to go on before its body is read") {
  Harness h;
  h.send("POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
  CHECK(h.take() == "HTTP/1.1 100 Continue\r\n\r\n");
  CHECK(h.c->state() == State::kBody);
  CHECK(h.handler.seen.empty());
  h.send("hello");
  CHECK(replies(h.take()).at(0).body == "POST /a hello");
  // The body already here, or an HTTP/1.0 client: no interim answer.
  h.send("POST /b HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi");
  CHECK(replies(h.take()).at(0).status == 200);
  h.send(
      "POST /c HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n"
      "Content-Length: 2\r\n\r\n");
  CHECK(h.take().empty());
}

// ---- limits and bad input ------------------------------------------------------------------

TEST_CASE("An oversized header answers 413, then the connection lingers dropping input") {
  Harness h;
  h.send(get("/a", "X-Big: " + std::string(2000, 'a') + "\r\n"));
  auto r = replies(h.take());
  REQUIRE(r.size() == 1);
  CHECK(r[0].status == 413);
  CHECK(r[0].body.find("request header larger than 1024 bytes") != std::string::npos);
  CHECK(r[0].head.find("Connection: close\r\n") != std::string::npos);
  CHECK(h.handler.seen.empty());
  CHECK(h.handler.refusals == std::vector<int>{413});
  CHECK(h.c->state() == State::kLinger);
  CHECK(h.c->half_close());
  CHECK(h.c->read() == Read::kData);
  CHECK(h.c->deadline() == kT0 + 2s);
  h.send(std::string(8000, 'z') + get("/b"));  // dropped, never answered
  CHECK(h.take().empty());
  CHECK(h.c->state() == State::kLinger);
  h.c->on_eof(h.now);
  CHECK(h.c->closed());
}

TEST_CASE("A body larger than the limit answers 413 from its Content-Length, unread") {
  Harness h;
  h.send("POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n");
  const auto r = replies(h.take());
  REQUIRE(r.size() == 1);  // no 100 Continue
  CHECK(r[0].status == 413);
  CHECK(r[0].body.find("request body larger than 1024 bytes") != std::string::npos);
  CHECK(h.handler.seen.empty());
  CHECK(h.c->state() == State::kLinger);
}

TEST_CASE("A chunked body growing past the limit answers 413") {
  Harness h;
  h.send("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  h.send("300\r\n" + std::string(0x300, 'x') + "\r\n");
  CHECK(h.take().empty());
  h.send("300\r\n" + std::string(0x300, 'x') + "\r\n0\r\n\r\n");
  CHECK(replies(h.take()).at(0).status == 413);
  CHECK(h.handler.seen.empty());
}

TEST_CASE("A lingering close ends after its time, or after its byte budget") {
  Harness timed;
  timed.send("GET /a HTTP/1.1\r\nConnection: close\r\n\r\n");
  REQUIRE(timed.c->state() == State::kLinger);
  timed.at(1999ms);
  CHECK(timed.c->state() == State::kLinger);
  timed.at(2s);
  CHECK(timed.c->closed());
  Harness flood;
  flood.send("GET /a HTTP/1.1\r\nConnection: close\r\n\r\n");
  flood.send(std::string(60 * 1024, 'x'));
  CHECK(flood.c->state() == State::kLinger);
  flood.send(std::string(8 * 1024, 'x'));
  CHECK(flood.c->closed());
}

TEST_CASE("Malformed requests answer 400 naming the problem and close after it") {
  for (const std::string& garbage :
       {std::string("\x01\x02 nonsense\r\n\r\n"), std::string("GET / HTTP/9.9\r\n\r\n"),
        std::string("GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
        std::string("POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n")}) {
    Harness h;
    h.send(garbage + get("/after"));
    INFO(garbage);
    const auto r = replies(h.take());
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == 400);
    CHECK(r[0].body.find("malformed HTTP request") != std::string::npos);
    CHECK(h.handler.seen.empty());
    CHECK(h.c->state() == State::kLinger);
  }
}

// ---- deadlines -------------------------------------------------------------------------------

TEST_CASE("A slow-loris header is cut off its timeout after its first byte, however it drips") {
  Harness h;
  h.send("GET /a HTTP/1.1\r\n");
  CHECK(h.c->state() == State::kHeader);
  CHECK(h.c->deadline() == kT0 + 10s);
  for (int i = 1; i < 10; ++i) {
    h.at(std::chrono::seconds(i));
    h.send("X-Drip: a\r\n");
    REQUIRE(h.c->state() == State::kHeader);
    CHECK(h.c->deadline() == kT0 + 10s);
  }
  h.at(10s);
  CHECK(h.c->closed());
  CHECK(h.out.empty());
  CHECK(h.handler.seen.empty());
}

TEST_CASE("A slow body is cut off its timeout after the end of its header") {
  Harness h;
  h.send("POST /a HTTP/1.1\r\nContent-Length: 100\r\n");
  h.at(3s);
  h.send("\r\n{");
  CHECK(h.c->state() == State::kBody);
  CHECK(h.c->deadline() == kT0 + 3s + 20s);
  h.at(22s);
  h.send("more");
  CHECK(h.c->state() == State::kBody);
  h.at(23s);
  CHECK(h.c->closed());
}

TEST_CASE("An idle connection closes after the idle timeout; a first byte starts the header's") {
  Harness h;
  CHECK(h.c->deadline() == kT0 + 60s);
  h.at(30s);
  h.send(get("/a"));
  CHECK(h.c->deadline() == kT0 + 90s);
  h.at(89s);
  h.send("G");
  CHECK(h.c->deadline() == kT0 + 99s);
  h.at(99s);
  CHECK(h.c->closed());
}

TEST_CASE("Timer events before the deadline change nothing") {
  Harness h;
  h.send("GET /a HTTP/1.1\r\n");
  h.at(9999ms);
  CHECK(h.c->state() == State::kHeader);
}

TEST_CASE("Over TLS nothing is read before the handshake, which must end in the header timeout") {
  Harness h(small_limits(), {}, /*handshake=*/true);
  CHECK(h.c->state() == State::kHandshake);
  CHECK(h.c->read() == Read::kNone);
  CHECK(h.c->deadline() == kT0 + 10s);
  h.now = kT0 + 1s;
  h.c->on_handshake(h.now);
  CHECK(h.c->read() == Read::kData);
  CHECK(h.c->deadline() == kT0 + 61s);
  Harness slow(small_limits(), {}, true);
  slow.at(10s);
  CHECK(slow.c->closed());
}

// ---- deferred answers --------------------------------------------------------------------------

TEST_CASE(
    "A deferred answer watches the socket and answers at its deadline; requests behind wait") {
  Harness h;
  h.send(get("/defer") + get("/b"));
  CHECK(h.out.empty());
  CHECK(h.c->state() == State::kDeferred);
  CHECK(h.c->read() == Read::kWatch);
  CHECK(h.c->deadline() == kT0 + 5s);
  CHECK(h.handler.seen.size() == 1);
  h.at(4s);
  CHECK(h.out.empty());
  h.at(5s);
  const auto r = replies(h.take());
  REQUIRE(r.size() == 2);
  CHECK(r[0].status == 304);
  CHECK(r[1].body == "GET /b ");
  CHECK(h.handler.resumed == 1);
  CHECK(h.handler.cancelled == 0);
}

TEST_CASE("A woken deferred answer is resumed and answered, and the connection carries on") {
  Harness h;
  h.send(get("/defer"));
  h.wake();
  auto r = replies(h.take());
  REQUIRE(r.size() == 1);
  CHECK(r[0].status == 200);
  CHECK(r[0].body == "woken");
  CHECK(h.c->state() == State::kIdle);
  h.c->on_wake(h.now);  // a stray wake-up changes nothing
  CHECK(h.handler.resumed == 1);
  h.send(get("/b"));
  CHECK(replies(h.take()).at(0).body == "GET /b ");
}

TEST_CASE("A deferred answer whose wake-up is on its way at the deadline waits for it") {
  Harness h;
  h.handler.wake_on_its_way = true;
  h.send(get("/defer"));
  h.at(5s);
  CHECK(h.out.empty());
  CHECK(h.c->state() == State::kDeferred);
  CHECK(h.c->deadline() == Clock::time_point::max());
  h.wake();
  CHECK(replies(h.take()).at(0).status == 200);
}

TEST_CASE("A client leaving while its answer is deferred cancels it and closes") {
  Harness h;
  h.send(get("/defer"));
  h.c->on_eof(h.now);
  CHECK(h.c->closed());
  CHECK(h.handler.cancelled == 1);
  CHECK(h.out.empty());
  h.c->on_wake(h.now);
  CHECK(h.handler.resumed == 0);
}

TEST_CASE("A connection destroyed while its answer is deferred cancels it") {
  Harness h;
  h.send(get("/defer"));
  h.c.reset();
  CHECK(h.handler.cancelled == 1);
}

// ---- shutdown -------------------------------------------------------------------------------

TEST_CASE("Shutdown closes an idle connection at once") {
  Harness h;
  h.send(get("/a"));
  h.take();
  h.c->on_stop(h.now);
  CHECK(h.c->closed());
  CHECK(h.out.empty());
}

TEST_CASE("Shutdown lets the request in hand finish, with Connection: close") {
  Harness h;
  h.send("GET /a HTTP/1.1\r\n");
  h.c->on_stop(h.now);
  CHECK(h.c->state() == State::kHeader);
  h.send("\r\n" + get("/b"));
  const auto r = replies(h.take());
  REQUIRE(r.size() == 1);
  CHECK(r[0].head.find("Connection: close\r\n") != std::string::npos);
  CHECK(h.c->state() == State::kLinger);
}

TEST_CASE("While the server drains, a woken deferred answer closes its connection") {
  Harness h;
  h.send(get("/defer"));
  h.settings.draining = true;
  h.wake();
  const auto r = replies(h.take());
  REQUIRE(r.size() == 1);
  CHECK(r[0].head.find("Connection: close\r\n") != std::string::npos);
  CHECK(h.c->state() == State::kLinger);
}

TEST_CASE("The peer closing mid-request closes; mid-answer the answer still goes out") {
  Harness h;
  h.send("GET /a HTTP/1.1\r\n");
  h.c->on_eof(h.now);
  CHECK(h.c->closed());
  Harness w;
  w.c->on_data(get("/a"), w.now);
  w.c->on_eof(w.now);
  REQUIRE(w.c->writing());
  w.flush();
  CHECK(w.c->state() == State::kLinger);
}

}  // namespace
}  // namespace tollgate
