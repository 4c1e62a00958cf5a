// The Asio driver: carries out what a Connection asks for on a plain or TLS socket, and feeds
// it the results. Everything here runs on the session's worker thread, except wake() and
// stop(), which only post to it.
#include <utility>  // before any Boost header (GCC 12 + C++20)

#include <sys/socket.h>

#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <type_traits>

#include "core.h"
#include "tollgate/util/log.h"
#include "tollgate/util/x509.h"

namespace tollgate::http {

namespace {

namespace ssl = asio::ssl;
using ErrorCode = boost::system::error_code;
using Timer = asio::basic_waitable_timer<Clock, asio::wait_traits<Clock>, Executor>;
using Read = Connection::Read;

template <bool kTls>
class Driver final : public Session,
                     public Exchange,
                     public std::enable_shared_from_this<Driver<kTls>> {
 public:
  using Stream = std::conditional_t<kTls, ssl::stream<Socket>, Socket>;

  Driver(ServerCore& core, Worker& worker, Socket&& socket, std::shared_ptr<ssl::context> ctx)
      : core_(core),
        worker_(worker),
        ctx_(std::move(ctx)),
        stream_(make_stream(std::move(socket), ctx_.get())),
        timer_(worker.ioc.get_executor()),
        conn_(core.settings, *this, Clock::now(), kTls) {}
  ~Driver() override { core_.remove_session(this); }
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  void start() {  // on the worker
    if constexpr (kTls) {
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](ErrorCode ec) {
                                if (self->conn_.closed()) return;
                                const auto now = Clock::now();
                                if (ec) {
                                  self->conn_.abort();
                                } else {
                                  self->read_peer_principal();
                                  self->conn_.on_handshake(now);
                                }
                                self->sync(now);
                              });
    } else {
      ErrorCode ignored;
      socket().non_blocking(true, ignored);  // answers are written straight from the handler
    }
    sync(Clock::now());
  }

  void wake() override { worker_.wake(this->shared_from_this()); }
  std::shared_ptr<Waker> waker() override { return this->shared_from_this(); }
  std::string_view peer_principal() const override { return peer_principal_; }

  void stop() override {
    asio::post(worker_.ioc, [self = this->shared_from_this()] {
      const auto now = Clock::now();
      self->conn_.on_stop(now);
      self->sync(now);
    });
  }

  void on_wake() override {
    const auto now = Clock::now();
    conn_.on_wake(now);
    sync(now);
  }

  void abort() override {
    conn_.abort();
    sync(Clock::now());
  }

 private:
  static Stream make_stream(Socket&& socket, ssl::context* ctx) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *ctx);
    } else {
      (void)ctx;
      return Stream(std::move(socket));
    }
  }

  // After the handshake: the verified client certificate's SPIFFE principal. The context
  // verifies client certificates only with a client CA, so without one there is none.
  void read_peer_principal() {
    if constexpr (kTls) {
      SSL* ssl = stream_.native_handle();
      if (SSL_get_verify_result(ssl) != X509_V_OK) return;
      peer_principal_ = util::spiffe_principal(SSL_get0_peer_certificate(ssl)).value_or("");
    }
  }

  Socket& socket() {
    if constexpr (kTls) {
      return stream_.next_layer();
    } else {
      return stream_;
    }
  }

  // Carries out what the connection asks for after an event. Answers that the socket takes at
  // once are done here, in a loop (pipelined requests), not by recursion.
  void sync(Clock::time_point now) {
    while (!conn_.closed() && conn_.writing() && !writing_ && write_now()) conn_.on_written(now);
    if (conn_.closed()) return close_socket();
    if (conn_.half_close() && !half_closed_) half_close();
    switch (conn_.read()) {
      case Read::kData:
        read();
        break;
      case Read::kWatch:
        watch();
        break;
      case Read::kNone:
        break;
    }
    arm(conn_.deadline(), now);
  }

  // True: all of the connection's output is written. Plain sockets are non-blocking and take
  // what they can with one sendmsg; the rest (and all of a TLS answer) goes asynchronously.
  bool write_now() {
    if constexpr (!kTls) {
      const auto out = conn_.output();
      const std::array<asio::const_buffer, 2> all{asio::buffer(out[0].data(), out[0].size()),
                                                  asio::buffer(out[1].data(), out[1].size())};
      ErrorCode ec;
      const std::size_t n = socket().write_some(all, ec);
      if (ec && ec != asio::error::would_block) {
        conn_.abort();
        return false;
      }
      if (n == out[0].size() + out[1].size()) return true;
      write_rest(n);
    } else {
      write_rest(0);
    }
    return false;
  }

  void write_rest(std::size_t done) {
    auto out = conn_.output();
    const std::size_t from_head = std::min(done, out[0].size());
    out[0].remove_prefix(from_head);
    out[1].remove_prefix(done - from_head);
    const std::array<asio::const_buffer, 2> rest{asio::buffer(out[0].data(), out[0].size()),
                                                 asio::buffer(out[1].data(), out[1].size())};
    writing_ = true;
    asio::async_write(stream_, rest, [self = this->shared_from_this()](ErrorCode ec, std::size_t) {
      self->writing_ = false;
      if (self->conn_.closed()) return;
      const auto now = Clock::now();
      if (ec) {
        self->conn_.abort();
      } else {
        self->conn_.on_written(now);
      }
      self->sync(now);
    });
  }

  void read() {
    if (reading_) return;
    if constexpr (kTls) {
      if (conn_.half_close()) return;  // the TLS shutdown reads until the peer's close_notify
      // The TLS stream may already hold the next request's bytes, which the socket's readiness
      // would not show: read through the stream (the aborted wait does nothing).
      if (watching_) {
        ErrorCode ignored;
        socket().cancel(ignored);
      }
    } else if (watching_) {
      return;  // the wait left from a deferred answer notices the next request
    }
    reading_ = true;
    peer_data_ = false;
    const auto into = conn_.read_buffer();
    stream_.async_read_some(asio::buffer(into.data(), into.size()),
                            [self = this->shared_from_this()](ErrorCode ec, std::size_t n) {
                              self->reading_ = false;
                              if (self->conn_.closed()) return;
                              const auto now = Clock::now();
                              if (ec) {
                                self->conn_.on_eof(now);
                              } else {
                                self->conn_.on_read(n, now);
                              }
                              self->sync(now);
                            });
  }

  // Notices a client going away while its answer is deferred, without reading: bytes that
  // come meanwhile are a pipelined request, read after the answer.
  void watch() {
    if (watching_ || reading_ || peer_data_) return;
    watching_ = true;
    socket().async_wait(Socket::wait_read, [self = this->shared_from_this()](ErrorCode ec) {
      self->watching_ = false;
      if (self->conn_.closed() || ec == asio::error::operation_aborted) return;
      const auto now = Clock::now();
      if (self->conn_.read() == Read::kWatch) {
        char c = 0;
        const auto n =
            ec ? 0 : ::recv(self->socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0) {
          self->peer_data_ = true;
          return;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return self->watch();
        self->conn_.on_eof(now);
      }
      self->sync(now);  // or the wait for the next request's first bytes
    });
  }

  void half_close() {
    half_closed_ = true;
    if constexpr (kTls) {
      stream_.async_shutdown([self = this->shared_from_this()](ErrorCode) {
        if (self->conn_.closed()) return;
        const auto now = Clock::now();
        self->conn_.on_eof(now);
        self->sync(now);
      });
    } else {
      ErrorCode ignored;
      socket().shutdown(Socket::shutdown_send, ignored);
    }
  }

  // One timer per connection, re-armed only when the deadline moves earlier: a later deadline
  // is picked up when the timer fires, so most requests never touch it. It is armed at most an
  // idle timeout ahead, so that the idle deadline after a long-poll's answer is not earlier.
  void arm(Clock::time_point deadline, Clock::time_point now) {
    if (deadline == Clock::time_point::max() || (armed_ && armed_for_ <= deadline)) return;
    armed_ = true;
    armed_for_ = std::min(deadline, now + core_.settings.limits.idle_timeout);
    const auto generation = ++timer_generation_;
    timer_.expires_at(armed_for_);
    timer_.async_wait([self = this->shared_from_this(), generation](ErrorCode) {
      if (generation != self->timer_generation_) return;
      self->armed_ = false;
      if (self->conn_.closed()) return;
      const auto fired = Clock::now();
      self->conn_.on_timer(fired);
      self->sync(fired);
    });
  }

  void close_socket() {
    if (socket_closed_) return;
    socket_closed_ = true;
    timer_.cancel();
    ErrorCode ignored;
    socket().close(ignored);
  }

  ServerCore& core_;
  Worker& worker_;
  std::shared_ptr<ssl::context> ctx_;  // outlives the stream that refers to it
  std::string peer_principal_;         // read_peer_principal()
  Stream stream_;
  Timer timer_;
  Connection conn_;
  Clock::time_point armed_for_;
  std::uint64_t timer_generation_ = 0;
  bool armed_ = false, reading_ = false, watching_ = false, writing_ = false;
  bool peer_data_ = false, half_closed_ = false, socket_closed_ = false;
};

template <bool kTls>
void start(ServerCore& core, Worker& worker, Socket socket, std::shared_ptr<ssl::context> tls) {
  auto d = std::make_shared<Driver<kTls>>(core, worker, std::move(socket), std::move(tls));
  if (core.add_session(d)) asio::post(worker.ioc, [d] { d->start(); });
}

}  // namespace

void Worker::wake(std::shared_ptr<Session> s) {
  bool first = false;
  {
    std::lock_guard lock(mu);
    first = woken.empty();
    woken.push_back(std::move(s));
  }
  if (first) asio::post(ioc, [this] { drain(); });
}

void Worker::drain() {
  std::vector<std::shared_ptr<Session>> batch;
  {
    std::lock_guard lock(mu);
    batch.swap(woken);
  }
  for (const auto& s : batch) {
    try {
      s->on_wake();
    } catch (const std::exception& e) {
      util::log_error("answering a woken connection failed", {{"error", e.what()}});
      s->abort();
    }
  }
}

void start_session(ServerCore& core, Worker& worker, Socket socket,
                   std::shared_ptr<asio::ssl::context> tls) {
  if (tls) {
    start<true>(core, worker, std::move(socket), std::move(tls));
  } else {
    start<false>(core, worker, std::move(socket), nullptr);
  }
}

}  // namespace tollgate::http
