// The module's only Boost.Beast translation unit: listener, workers, sessions (plain and TLS),
// parking. One control thread accepts; each worker thread runs its own io_context and owns its
// connections for their whole life, so a session's handlers never run concurrently.
#include <utility>  // before any Boost header (GCC 12 + C++20)

#include "tollgate/server/server.h"

#include <sys/socket.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <condition_variable>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "tollgate/server/api.h"
#include "tollgate/util/log.h"

namespace tollgate::server {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// What the publish listener and the sessions share; it outlives the Server because the
// publisher keeps the listener.
struct Shared {
  explicit Shared(std::shared_ptr<const publish::Snapshot> first) : waiters(std::move(first)) {}
  WaitList waiters;
  Metrics metrics;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream b;
  b << in.rdbuf();
  return b.str();
}

util::Result<std::shared_ptr<ssl::context>> make_tls(const ServerOptions& o) {
  try {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                     ssl::context::single_dh_use);
    ctx->use_certificate_chain_file(o.tls_cert_file);
    ctx->use_private_key_file(o.tls_key_file, ssl::context::pem);
    if (!o.tls_client_ca_file.empty()) {
      ctx->load_verify_file(o.tls_client_ca_file);
      ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    }
    return ctx;
  } catch (const std::exception& e) {
    return util::make_error(std::string("TLS certificate, key or client CA: ") + e.what());
  }
}

util::Result<tcp::endpoint> parse_listen(const std::string& listen) {
  std::string host, port;
  if (!listen.empty() && listen[0] == '[') {
    const auto close = listen.find(']');
    if (close == std::string::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
      return util::make_error("--listen " + listen + ": want [IPv6]:PORT");
    }
    host = listen.substr(1, close - 1);
    port = listen.substr(close + 2);
  } else {
    const auto colon = listen.rfind(':');
    if (colon == std::string::npos)
      return util::make_error("--listen " + listen + ": want HOST:PORT");
    host = listen.substr(0, colon);
    port = listen.substr(colon + 1);
  }
  if (host.empty()) host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  int p = -1;
  try {
    std::size_t used = 0;
    p = std::stoi(port, &used);
    if (used != port.size()) p = -1;
  } catch (const std::exception&) {
    p = -1;
  }
  if (p < 0 || p > 65535) return util::make_error("--listen " + listen + ": bad port");
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) return util::make_error("--listen " + listen + ": not an IP address: " + host);
  return tcp::endpoint(addr, static_cast<std::uint16_t>(p));
}

bool is_http_error(const boost::system::error_code& ec) {
  return &ec.category() == &http::make_error_code(http::error::bad_target).category();
}

using Executor = asio::io_context::executor_type;
using Socket = asio::basic_stream_socket<tcp, Executor>;
using Timer = asio::basic_waitable_timer<Clock, asio::wait_traits<Clock>, Executor>;

class SessionBase : public Waiter {
 public:
  virtual void stop() = 0;     // any thread
  virtual void on_wake() = 0;  // on the session's worker
  virtual void abort() = 0;    // on the session's worker: close now
};

// One thread and its own io_context. A connection stays on one worker for its whole life, so
// its handlers never run concurrently and need no strand; other threads reach a session only
// by posting to its worker.
struct Worker {
  asio::io_context ioc{1};
  std::optional<asio::executor_work_guard<Executor>> work{ioc.get_executor()};
  std::thread thread;
  std::string scratch;  // answers' heads are built here (only on this worker's thread)
  std::mutex mu;
  std::vector<std::shared_ptr<SessionBase>> woken;  // guarded by mu

  // A publish wakes many sessions at once: they are queued and answered by one handler.
  void wake(std::shared_ptr<SessionBase> s) {
    bool first = false;
    {
      std::lock_guard lock(mu);
      first = woken.empty();
      woken.push_back(std::move(s));
    }
    if (first) asio::post(ioc, [this] { drain(); });
  }

  void drain() {
    std::vector<std::shared_ptr<SessionBase>> batch;
    {
      std::lock_guard lock(mu);
      batch.swap(woken);
    }
    for (const auto& s : batch) {
      try {
        s->on_wake();
      } catch (const std::exception& e) {
        util::log_error("answering a woken long-poll failed", {{"error", e.what()}});
        s->abort();
      }
    }
  }
};

// What a session keeps of a request: the few fields the API reads. Reused across requests.
struct RequestData {
  std::string method, target, if_none_match, prefer, expect, body;
  int version = 11;
  void clear() {
    method.clear();
    target.clear();
    if_none_match.clear();
    prefer.clear();
    expect.clear();
    body.clear();
    version = 11;
  }
};

// Beast's HTTP/1.1 request parser, keeping only what RequestData holds (no allocation per
// header field). Limits, chunked bodies and keep-alive are Beast's.
class RequestParser final : public http::basic_parser<true> {
 public:
  explicit RequestParser(RequestData& d) : d_(d) {}

 private:
  void on_request_impl(http::verb, beast::string_view method, beast::string_view target,
                       int version, boost::system::error_code&) override {
    d_.method.assign(method.data(), method.size());
    d_.target.assign(target.data(), target.size());
    d_.version = version;
  }
  void on_response_impl(int, beast::string_view, int, boost::system::error_code& ec) override {
    ec = http::error::bad_version;  // not reached: this is a request parser
  }
  void on_field_impl(http::field f, beast::string_view name, beast::string_view value,
                     boost::system::error_code&) override {
    std::string* into = nullptr;
    if (f == http::field::if_none_match) {
      into = &d_.if_none_match;
    } else if (f == http::field::expect) {
      into = &d_.expect;
    } else if (f == http::field::prefer || beast::iequals(name, "prefer")) {
      into = &d_.prefer;
    }
    if (into != nullptr && into->empty()) into->assign(value.data(), value.size());
  }
  void on_header_impl(boost::system::error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>& length,
                         boost::system::error_code&) override {
    // Beast has checked the length against the body limit; the cap is only a second guard.
    if (length) d_.body.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(*length, 65536)));
  }
  std::size_t on_body_impl(beast::string_view body, boost::system::error_code&) override {
    d_.body.append(body.data(), body.size());
    return body.size();
  }
  void on_chunk_header_impl(std::uint64_t, beast::string_view,
                            boost::system::error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body,
                                 boost::system::error_code&) override {
    d_.body.append(body.data(), body.size());
    return body.size();
  }
  void on_finish_impl(boost::system::error_code&) override {}

  RequestData& d_;
};

}  // namespace

struct ServerImpl {
  ServerImpl(ServerOptions o, publish::Publisher& p)
      : options(std::move(o)),
        publisher(p),
        shared(std::make_shared<Shared>(p.current())),
        api(ApiOptions{options.max_wait, options.staleness}, shared->waiters, shared->metrics) {
    sources_fn = [this] {
      std::lock_guard lock(sources_mu);
      return sources ? sources() : std::vector<SourceStats>{};
    };
  }

  void accept();
  void on_accept(boost::system::error_code ec, Worker& worker, Socket socket);
  void check_tls();
  void refuse(Socket& socket);
  std::shared_ptr<ssl::context> tls_context() {
    std::lock_guard lock(tls_mu);
    return tls;
  }
  void add_session(const std::shared_ptr<SessionBase>& s) {
    std::lock_guard lock(conn_mu);
    sessions.emplace(s.get(), s);
  }
  void remove_session(SessionBase* s) {
    std::lock_guard lock(conn_mu);
    sessions.erase(s);
    connections.fetch_sub(1);
    conn_cv.notify_all();
  }

  ServerOptions options;
  publish::Publisher& publisher;
  std::shared_ptr<Shared> shared;
  Api api;
  std::mutex sources_mu;
  std::function<std::vector<SourceStats>()> sources;  // guarded by sources_mu
  Api::SourceStatsFn sources_fn;                      // reads `sources` under the lock
  std::atomic<std::uint16_t> port{0};
  std::atomic<bool> stopping{false};
  bool started = false, stopped = false;

  // Declared before the io_contexts: sessions destroyed with them still reach these.
  std::mutex conn_mu;
  std::condition_variable conn_cv;
  std::unordered_map<SessionBase*, std::weak_ptr<SessionBase>> sessions;
  std::atomic<std::size_t> connections{0};
  std::mutex tls_mu;
  std::shared_ptr<ssl::context> tls;
  std::string tls_files;  // the files' contents last loaded (or tried)

  std::vector<std::unique_ptr<Worker>> workers;
  std::size_t next_worker = 0;  // on the control thread
  // The control thread: the acceptor and the TLS file check.
  asio::io_context control{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> control_work;
  std::thread control_thread;
  tcp::acceptor acceptor{control};
  asio::steady_timer tls_timer{control};
  asio::steady_timer accept_retry{control};
};

namespace {

template <bool kTls>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<kTls>> {
 public:
  using Stream = std::conditional_t<kTls, ssl::stream<Socket>, Socket>;

  Session(ServerImpl& server, Worker& worker, Socket&& socket, std::shared_ptr<ssl::context> ctx)
      : server_(server),
        worker_(worker),
        ctx_(std::move(ctx)),
        stream_(make_stream(std::move(socket), ctx_.get())),
        timer_(worker.ioc.get_executor()) {}
  ~Session() override { server_.remove_session(this); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start() {  // on the worker
    if constexpr (kTls) {
      state_ = State::kHandshake;
      set_deadline(Clock::now() + server_.options.header_timeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](boost::system::error_code ec) {
                                if (self->state_ == State::kClosed) return;
                                if (ec) return self->close();
                                self->wait_idle();
                              });
    } else {
      boost::system::error_code ignored;
      stream_.non_blocking(true, ignored);  // respond() writes directly
      wait_idle();
    }
  }

  void wake() override { worker_.wake(this->shared_from_this()); }

  void stop() override {
    asio::post(worker_.ioc, [self = this->shared_from_this()] {
      self->close_after_ = true;
      if (self->state_ == State::kIdle) self->close();
    });
  }

  void on_wake() override {
    if (!parked_ || state_ == State::kClosed) return;
    parked_ = false;
    serve_table();
  }

  void abort() override { close(); }

 private:
  // kBusy never outlives a handler; the others wait for I/O or the deadline.
  enum class State : std::uint8_t {
    kHandshake,
    kIdle,
    kReading,
    kBusy,
    kParked,
    kWriting,
    kClosing,
    kClosed
  };
  static constexpr std::size_t kReadChunk = 4096;

  static Stream make_stream(Socket&& socket, ssl::context* ctx) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *ctx);
    } else {
      (void)ctx;
      return Stream(std::move(socket));
    }
  }

  Socket& socket() {
    if constexpr (kTls) {
      return stream_.next_layer();
    } else {
      return stream_;
    }
  }

  // One timer per session, re-armed only when the deadline moves earlier: a later deadline
  // is picked up when the timer fires, so most requests never touch it. It is armed at most
  // an idle timeout ahead, so that the idle deadline after a long-poll's answer is not earlier.
  void set_deadline(Clock::time_point d) {
    deadline_ = d;
    if (timer_armed_ && armed_for_ <= d) return;
    timer_armed_ = true;
    armed_for_ = std::min(d, Clock::now() + server_.options.idle_timeout);
    const auto generation = ++timer_generation_;
    timer_.expires_at(armed_for_);
    timer_.async_wait([self = this->shared_from_this(), generation](boost::system::error_code) {
      self->on_timer(generation);
    });
  }

  void on_timer(std::uint64_t generation) {
    if (generation != timer_generation_ || state_ == State::kClosed) return;
    timer_armed_ = false;
    if (Clock::now() < deadline_) return set_deadline(deadline_);
    switch (state_) {
      case State::kParked:
        // The wait ended. If unpark fails, a wake-up is already on its way and answers.
        if (parked_ && server_.shared->waiters.unpark(park_key_, this)) {
          parked_ = false;
          serve_table();
        }
        return;
      case State::kBusy:
      case State::kClosed:
        return;
      default:  // idle too long, a slow header, body, write or handshake
        close();
    }
  }

  // Between requests: the idle timeout runs until the next request's first bytes.
  void wait_idle() {
    if (close_after_ || server_.stopping) return close();
    state_ = State::kIdle;
    set_deadline(Clock::now() + server_.options.idle_timeout);
    if (buffer_.size() > 0) {  // pipelined: parse from a fresh handler, not from inside respond()
      state_ = State::kBusy;   // nothing reads meanwhile: parse() consumes the buffer
      asio::post(worker_.ioc, [self = this->shared_from_this()] {
        if (self->state_ == State::kClosed) return;
        self->state_ = State::kIdle;
        self->parse();
      });
      return;
    }
    if (read_pending_) return;
    if constexpr (kTls) {
      // The TLS stream may already hold the next request's bytes, which the socket's
      // readiness would not show: read through the stream (the aborted wait does nothing).
      if (wait_pending_) {
        boost::system::error_code ignored;
        socket().cancel(ignored);
      }
      read_more();
    } else if (!wait_pending_) {
      read_more();  // else the wait left from parking notices the next request
    }
  }

  void read_more() {
    if (read_pending_) return;
    read_pending_ = true;
    stream_.async_read_some(
        buffer_.prepare(kReadChunk),
        [self = this->shared_from_this()](boost::system::error_code ec, std::size_t n) {
          self->read_pending_ = false;
          if (self->state_ == State::kClosed) return;
          if (self->state_ == State::kClosing) return self->discarded(ec, n);
          if (ec) return self->on_read_error(ec);
          self->buffer_.commit(n);
          self->parse();
        });
  }

  // Feeds the buffered bytes to the parser; reads more until the request is complete. The
  // header (and then the body) deadline is set only when a request needs another read.
  void parse() {
    if (state_ != State::kReading) {  // the first bytes of a request
      state_ = State::kReading;
      request_started_ = Clock::now();
      request_.clear();
      parser_.emplace(request_);
      parser_->header_limit(static_cast<std::uint32_t>(server_.options.max_header_bytes));
      parser_->body_limit(std::uint64_t{server_.options.max_body_bytes});
      header_done_ = false;
    }
    while (!parser_->is_done()) {
      if (buffer_.size() == 0) return read_rest();
      boost::system::error_code ec;
      const std::size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec == http::error::need_more || (!ec && used == 0)) return read_rest();
      if (ec) return on_read_error(ec);
      if (!header_done_ && parser_->is_header_done()) {
        header_done_ = true;
        if (!on_header()) return;
      }
    }
    process();
  }

  // A request that is not complete yet: the header must arrive within the header timeout of
  // the request's first bytes, then the body within the body timeout of the header.
  void read_rest() {
    set_deadline(header_done_ ? body_started_ + server_.options.body_timeout
                              : request_started_ + server_.options.header_timeout);
    read_more();
  }

  // False: the session goes on elsewhere (an error answer, or 100 Continue being written).
  bool on_header() {
    const auto length = parser_->content_length();
    if (length && *length > server_.options.max_body_bytes) {
      fail(413,
           "request body larger than " + std::to_string(server_.options.max_body_bytes) + " bytes");
      return false;
    }
    if (parser_->is_done()) return true;
    body_started_ = Clock::now();
    if (beast::iequals(request_.expect, "100-continue")) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(
          stream_, asio::buffer(kContinue.data(), kContinue.size()),
          [self = this->shared_from_this()](boost::system::error_code ec, std::size_t) {
            if (self->state_ == State::kClosed) return;
            if (ec) return self->close();
            self->parse();
          });
      return false;
    }
    return true;
  }

  void on_read_error(boost::system::error_code ec) {
    if (ec == http::error::header_limit) {
      return fail(413, "request header larger than " +
                           std::to_string(server_.options.max_header_bytes) + " bytes");
    }
    if (ec == http::error::body_limit) {
      return fail(413, "request body larger than " +
                           std::to_string(server_.options.max_body_bytes) + " bytes");
    }
    if (is_http_error(ec) && ec != http::error::end_of_stream &&
        ec != http::error::partial_message) {
      return fail(400, "malformed HTTP request: " + ec.message());
    }
    close();  // the peer went away, or shutdown
  }

  // Answers an error and closes the connection.
  void fail(int status, const std::string& message) {
    close_after_ = true;
    endpoint_ = Endpoint::kOther;
    parser_.reset();
    respond(error_response(status, message));
  }

  void process() {
    state_ = State::kBusy;
    keep_alive_ = parser_->keep_alive();
    http10_ = request_.version == 10;
    parser_.reset();
    Routed routed;
    try {
      HttpRequest r;
      r.method = request_.method;
      r.target = request_.target;
      r.if_none_match = request_.if_none_match;
      r.prefer = request_.prefer;
      r.body = request_.body;
      routed = server_.api.route(r, server_.connections.load(), server_.sources_fn);
    } catch (const std::exception& e) {
      util::log_error("request failed", {{"error", e.what()}});
      routed.response = error_response(500, "internal error");
    }
    endpoint_ = routed.endpoint;
    if (routed.table) {
      query_ = std::move(*routed.table);
      wait_until_ = Clock::now() + query_.wait;
      return serve_table();
    }
    respond(std::move(routed.response));
  }

  void serve_table() {
    state_ = State::kBusy;
    for (int attempt = 0; attempt < 4; ++attempt) {
      const bool may_park = attempt < 3 && !server_.stopping && Clock::now() < wait_until_;
      auto answer = server_.api.table(server_.shared->waiters.snapshot(), query_, may_park);
      if (answer.park_key.empty()) return respond(std::move(answer.response));
      park_key_ = std::move(answer.park_key);
      if (server_.shared->waiters.park(park_key_, answer.park_etag, this->shared_from_this())) {
        return park();
      }
      // The table changed between the answer and parking: answer again.
    }
  }

  void park() {
    state_ = State::kParked;
    parked_ = true;
    if (buffer_.size() == 0) buffer_.shrink_to_fit();
    set_deadline(wait_until_);
    if (!wait_pending_) await_readable();
  }

  // Notices a parked client going away without reading; after the answer, the same wait
  // notices the next request.
  void await_readable() {
    wait_pending_ = true;
    socket().async_wait(Socket::wait_read,
                        [self = this->shared_from_this()](boost::system::error_code ec) {
                          self->wait_pending_ = false;
                          self->on_readable(ec);
                        });
  }

  void on_readable(boost::system::error_code ec) {
    if (state_ == State::kClosed || ec == asio::error::operation_aborted) return;
    if (parked_) {
      char c = 0;
      const auto n = ec ? 0 : ::recv(socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) return;  // a pipelined request: read after the answer
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return await_readable();
      if (server_.shared->waiters.unpark(park_key_, this)) {  // the client left
        parked_ = false;
        close();
      }
      return;
    }
    if (ec) return close();
    if (state_ == State::kIdle) read_more();  // the next request, or the end of the stream
    // Otherwise an answer is being written; wait_idle() reads after it.
  }

  void respond(HttpResponse r) {
    state_ = State::kWriting;
    server_.shared->metrics.count_request(endpoint_, r.status);
    const bool close = close_after_ || !keep_alive_ || server_.stopping;
    close_after_ = close;
    const bool has_body = r.status != 304;
    const auto body = has_body ? r.body_bytes() : std::string_view();
    // Plain connections build the head in the worker's scratch string and write at once; the
    // session keeps bytes only if the socket does not take them all.
    std::string& head = kTls ? out_ : worker_.scratch;
    head.clear();
    head += "HTTP/1.1 ";
    head += std::to_string(r.status);
    head += ' ';
    const auto reason = http::obsolete_reason(http::int_to_status(r.status));
    head.append(reason.data(), reason.size());
    head += "\r\n";
    if (has_body) {
      head += "Content-Type: ";
      head += r.content_type;
      head += "\r\nContent-Length: ";
      head += std::to_string(body.size());
      head += "\r\n";
    }
    head += r.headers;
    if (close) {
      head += "Connection: close\r\n";
    } else if (http10_) {
      head += "Connection: keep-alive\r\n";
    }
    head += "\r\n";
    std::size_t body_from = 0;
    if constexpr (!kTls) {
      boost::system::error_code ec;
      const std::array<asio::const_buffer, 2> all{asio::buffer(head),
                                                  asio::buffer(body.data(), body.size())};
      const std::size_t n = socket().write_some(all, ec);  // the socket is non-blocking
      if (ec && ec != asio::error::would_block) return on_write(ec);
      if (n == head.size() + body.size()) return on_write({});
      const std::size_t head_left = n < head.size() ? head.size() - n : 0;
      out_.assign(head, head.size() - head_left, head_left);
      body_from = n > head.size() ? n - head.size() : 0;
    }
    response_ = std::move(r);  // keeps the body alive until written
    const auto rest = has_body ? response_.body_bytes().substr(body_from) : std::string_view();
    std::array<asio::const_buffer, 2> buffers{asio::buffer(out_),
                                              asio::buffer(rest.data(), rest.size())};
    set_deadline(Clock::now() + server_.options.idle_timeout);
    asio::async_write(stream_, buffers,
                      [self = this->shared_from_this()](boost::system::error_code ec, std::size_t) {
                        self->on_write(ec);
                      });
  }

  void on_write(boost::system::error_code ec) {
    response_ = HttpResponse{};
    out_.clear();
    if (state_ == State::kClosed) return;
    if (ec) return close();
    if (close_after_) return graceful_close();
    wait_idle();
  }

  void graceful_close() {
    if constexpr (kTls) {
      state_ = State::kClosing;
      set_deadline(Clock::now() + std::chrono::seconds(2));
      stream_.async_shutdown(
          [self = this->shared_from_this()](boost::system::error_code) { self->close(); });
    } else {
      // A lingering close: after our FIN, read and drop what the client still sends (say, a
      // body we refused with 413) until it closes, for at most 2 s and 64 MiB. Closing with
      // unread data would reset the connection, and the client could lose the answer.
      boost::system::error_code ignored;
      socket().shutdown(Socket::shutdown_send, ignored);
      state_ = State::kClosing;
      set_deadline(Clock::now() + std::chrono::seconds(2));
      buffer_.clear();
      discard_left_ = std::size_t{64} << 20;
      read_more();  // discarded() drops what it reads
    }
  }

  // A lingering close's read: the bytes are dropped (not committed: the buffer does not grow).
  void discarded(boost::system::error_code ec, std::size_t n) {
    if (ec || n >= discard_left_) return close();
    discard_left_ -= n;
    read_more();
  }

  void close() {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    if (parked_ && server_.shared->waiters.unpark(park_key_, this)) parked_ = false;
    timer_.cancel();
    boost::system::error_code ignored;
    socket().close(ignored);
  }

  ServerImpl& server_;
  Worker& worker_;
  std::shared_ptr<ssl::context> ctx_;  // outlives the stream that refers to it
  Stream stream_;
  Timer timer_;
  Clock::time_point deadline_, armed_for_;
  std::uint64_t timer_generation_ = 0;
  beast::flat_buffer buffer_;
  RequestData request_;
  std::optional<RequestParser> parser_;
  State state_ = State::kIdle;
  Endpoint endpoint_ = Endpoint::kOther;
  bool keep_alive_ = true, http10_ = false, close_after_ = false, parked_ = false;
  bool header_done_ = false, timer_armed_ = false, read_pending_ = false, wait_pending_ = false;
  TableQuery query_;
  Clock::time_point wait_until_, request_started_, body_started_;
  std::string park_key_;
  std::string out_;               // bytes of an answer still to be written
  std::size_t discard_left_ = 0;  // a lingering close drops at most this many more bytes
  HttpResponse response_;         // the answer being written asynchronously
};

}  // namespace

void ServerImpl::accept() {
  Worker& worker = *workers[next_worker++ % workers.size()];
  acceptor.async_accept(worker.ioc, [this, &worker](boost::system::error_code ec, Socket socket) {
    on_accept(ec, worker, std::move(socket));
  });
}

void ServerImpl::refuse(Socket& socket) {
  static constexpr std::string_view kBusy =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Content-Length: 40\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
      "{\"error\":\"too many connections; retry\"}\n";
  boost::system::error_code ignored;
  socket.non_blocking(true, ignored);
  socket.write_some(asio::buffer(kBusy.data(), kBusy.size()), ignored);
  socket.shutdown(Socket::shutdown_both, ignored);
  socket.close(ignored);
  shared->metrics.count_request(Endpoint::kOther, 503);
}

void ServerImpl::on_accept(boost::system::error_code ec, Worker& worker, Socket socket) {
  if (stopping) return;
  if (ec) {
    if (ec == asio::error::operation_aborted) return;
    util::log_warn("accept failed", {{"error", ec.message()}});
    accept_retry.expires_after(std::chrono::milliseconds(50));  // e.g. out of descriptors
    accept_retry.async_wait([this](boost::system::error_code e) {
      if (!e && !stopping) accept();
    });
    return;
  }
  if (connections.load() >= options.max_connections) {
    refuse(socket);
  } else {
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    connections.fetch_add(1);
    if (auto ctx = tls_context()) {
      auto s = std::make_shared<Session<true>>(*this, worker, std::move(socket), std::move(ctx));
      add_session(s);
      asio::post(worker.ioc, [s] { s->start(); });
    } else {
      auto s = std::make_shared<Session<false>>(*this, worker, std::move(socket), nullptr);
      add_session(s);
      asio::post(worker.ioc, [s] { s->start(); });
    }
  }
  accept();
}

void ServerImpl::check_tls() {
  tls_timer.expires_after(options.tls_reload_interval);
  tls_timer.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping) return;
    std::string files = read_all(options.tls_cert_file) + '\0' + read_all(options.tls_key_file) +
                        '\0' + read_all(options.tls_client_ca_file);
    if (files != tls_files) {
      tls_files = std::move(files);
      auto ctx = make_tls(options);
      if (ctx.ok()) {
        std::lock_guard lock(tls_mu);
        tls = std::move(*ctx);
        util::log_info("TLS certificate reloaded", {{"cert", options.tls_cert_file}});
      } else {
        util::log_warn("TLS files changed but do not load; keeping the previous certificate",
                       {{"error", ctx.error().message}});
      }
    }
    check_tls();
  });
}

namespace {

// Runs `ioc` until it is stopped; a handler's exception is logged and the loop goes on.
void run_loop(asio::io_context& ioc, const char* what) {
  for (;;) {
    try {
      ioc.run();
      return;
    } catch (const std::exception& e) {
      util::log_error(std::string(what) + " caught an exception; continuing",
                      {{"error", e.what()}});
    } catch (...) {
      util::log_error(std::string(what) + " caught an unknown exception; continuing");
    }
  }
}

}  // namespace

Server::Server(ServerOptions options, publish::Publisher& publisher)
    : impl_(std::make_shared<ServerImpl>(std::move(options), publisher)) {
  publisher.add_listener(
      [shared = impl_->shared, &publisher](const publish::SnapshotBuilder::Result& r) {
        shared->waiters.publish(r.snapshot, r.changed_pods);
        shared->metrics.on_publish(publisher.stats());
      });
}

Server::~Server() {
  try {
    shutdown();
  } catch (const std::exception& e) {  // a destructor must not throw; log and go on
    util::log_error("server shutdown failed", {{"error", e.what()}});
  } catch (...) {
    util::log_error("server shutdown failed");
  }
}

void Server::set_source_stats(std::function<std::vector<SourceStats>()> f) {
  std::lock_guard lock(impl_->sources_mu);
  impl_->sources = std::move(f);
}

util::Result<bool> Server::start() {
  auto& s = *impl_;
  if (s.started) return util::make_error("the server was already started");
  TOLLGATE_TRY(endpoint, parse_listen(s.options.listen));
  const bool tls = !s.options.tls_cert_file.empty() || !s.options.tls_key_file.empty();
  if (tls) {
    if (s.options.tls_cert_file.empty() || s.options.tls_key_file.empty()) {
      return util::make_error("TLS needs both a certificate and a key file");
    }
    s.tls_files = read_all(s.options.tls_cert_file) + '\0' + read_all(s.options.tls_key_file) +
                  '\0' + read_all(s.options.tls_client_ca_file);
    TOLLGATE_TRY(ctx, make_tls(s.options));
    s.tls = std::move(ctx);
  } else if (!s.options.tls_client_ca_file.empty()) {
    return util::make_error("a client CA needs TLS: give a certificate and a key file");
  }
  boost::system::error_code ec;
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return util::make_error("cannot listen on " + s.options.listen + ": " + ec.message());
  s.port = s.acceptor.local_endpoint(ec).port();
  s.started = true;
  int n = s.options.threads > 0 ? s.options.threads
                                : static_cast<int>(std::thread::hardware_concurrency());
  n = std::max(n, 1);
  for (int i = 0; i < n; ++i) s.workers.push_back(std::make_unique<Worker>());
  for (auto& w : s.workers)
    w->thread = std::thread([&ioc = w->ioc] { run_loop(ioc, "HTTP worker"); });
  s.control_work.emplace(s.control.get_executor());
  asio::post(s.control, [&s] {
    s.accept();
    if (s.tls) s.check_tls();
  });
  s.control_thread = std::thread([&s] { run_loop(s.control, "HTTP listener"); });
  util::log_info("serving",
                 {{"listen", endpoint.address().to_string() + ":" + std::to_string(s.port.load())},
                  {"tls", tls ? "true" : "false"}});
  return true;
}

std::uint16_t Server::port() const { return impl_->port.load(); }
std::size_t Server::parked() const { return impl_->shared->waiters.parked(); }
std::size_t Server::connections() const { return impl_->connections.load(); }
std::shared_ptr<const publish::Snapshot> Server::snapshot() const {
  return impl_->shared->waiters.snapshot();
}

void Server::shutdown() {
  auto& s = *impl_;
  if (!s.started || s.stopped) return;
  s.stopped = true;
  s.stopping = true;
  asio::post(s.control, [&s] {
    boost::system::error_code ignored;
    s.acceptor.close(ignored);
    s.tls_timer.cancel();
    s.accept_retry.cancel();
  });
  s.shared->waiters.shutdown();  // parked long-polls answer 304
  std::vector<std::shared_ptr<SessionBase>> live;
  {
    std::lock_guard lock(s.conn_mu);
    for (auto& [_, weak] : s.sessions) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
  }
  for (const auto& session : live) session->stop();  // idle connections close
  live.clear();                                      // outside the lock: this may destroy a session
  {
    std::unique_lock lock(s.conn_mu);
    s.conn_cv.wait_for(lock, std::chrono::seconds(10), [&s] { return s.connections == 0; });
  }
  s.control_work.reset();
  s.control.stop();
  s.control_thread.join();
  for (auto& w : s.workers) {
    w->work.reset();
    w->ioc.stop();
  }
  for (auto& w : s.workers) w->thread.join();
  util::log_info("server stopped");
}

}  // namespace tollgate::server
