// The module's only Boost.Beast translation unit: listener, sessions (plain and TLS), parking.
#include <utility>  // before any Boost header (GCC 12 + C++20)

#include "tollgate/server/server.h"

#include <sys/socket.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
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

class SessionBase : public Waiter {
 public:
  virtual void stop() = 0;
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
  void on_accept(boost::system::error_code ec, tcp::socket socket);
  void check_tls();
  void refuse(tcp::socket& socket);
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

  // Declared before the io_context: sessions destroyed with it still reach these.
  std::mutex conn_mu;
  std::condition_variable conn_cv;
  std::unordered_map<SessionBase*, std::weak_ptr<SessionBase>> sessions;
  std::atomic<std::size_t> connections{0};
  std::mutex tls_mu;
  std::shared_ptr<ssl::context> tls;
  std::string tls_files;  // the files' contents last loaded (or tried)

  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  asio::strand<asio::io_context::executor_type> control{asio::make_strand(ioc)};
  tcp::acceptor acceptor{control};
  asio::steady_timer tls_timer{control};
  asio::steady_timer accept_retry{control};
  std::vector<std::thread> threads;
};

namespace {

template <bool kTls>
class Session : public SessionBase, public std::enable_shared_from_this<Session<kTls>> {
 public:
  using Stream = std::conditional_t<kTls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

  Session(ServerImpl& server, tcp::socket&& socket, std::shared_ptr<ssl::context> ctx)
      : server_(server),
        executor_(socket.get_executor()),
        ctx_(std::move(ctx)),
        stream_(make_stream(std::move(socket), ctx_.get())),
        timer_(executor_) {}
  ~Session() override { server_.remove_session(this); }

  void start() {
    if constexpr (kTls) {
      tcp_layer().expires_after(server_.options.header_timeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](boost::system::error_code ec) {
                                if (ec) return self->close();
                                self->wait_idle();
                              });
    } else {
      wait_idle();
    }
  }

  void wake() override {
    asio::post(executor_, [self = this->shared_from_this()] { self->on_wake(); });
  }

  void stop() override {
    asio::post(executor_, [self = this->shared_from_this()] {
      self->close_after_ = true;
      if (self->state_ == State::kIdle) self->tcp_layer().socket().cancel();
    });
  }

 private:
  enum class State : std::uint8_t { kIdle, kReading, kBusy, kParked, kClosed };

  static Stream make_stream(tcp::socket&& socket, ssl::context* ctx) {
    if constexpr (kTls) {
      return Stream(beast::tcp_stream(std::move(socket)), *ctx);
    } else {
      (void)ctx;
      return Stream(std::move(socket));
    }
  }

  beast::tcp_stream& tcp_layer() { return beast::get_lowest_layer(stream_); }

  // Waits for the first bytes of the next request (idle timeout), then reads its header.
  void wait_idle() {
    if (close_after_ || server_.stopping) return close();
    if (buffer_.size() > 0) return read_header();
    state_ = State::kIdle;
    tcp_layer().expires_after(server_.options.idle_timeout);
    stream_.async_read_some(
        buffer_.prepare(1024),
        [self = this->shared_from_this()](boost::system::error_code ec, std::size_t n) {
          if (ec) return self->close();
          self->buffer_.commit(n);
          self->read_header();
        });
  }

  void read_header() {
    state_ = State::kReading;
    parser_ = std::make_unique<http::request_parser<http::string_body>>();
    parser_->header_limit(static_cast<std::uint32_t>(server_.options.max_header_bytes));
    parser_->body_limit(server_.options.max_body_bytes);
    tcp_layer().expires_after(server_.options.header_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](boost::system::error_code ec, std::size_t) {
          self->on_header(ec);
        });
  }

  void on_header(boost::system::error_code ec) {
    if (ec) return on_read_error(ec);
    const auto length = parser_->content_length();
    if (length && *length > server_.options.max_body_bytes) {
      return fail(413, "request body larger than " +
                           std::to_string(server_.options.max_body_bytes) + " bytes");
    }
    if (parser_->is_done()) return process();
    tcp_layer().expires_after(server_.options.body_timeout);
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(
          stream_, asio::buffer(kContinue.data(), kContinue.size()),
          [self = this->shared_from_this()](boost::system::error_code ec2, std::size_t) {
            if (ec2) return self->close();
            self->read_body();
          });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](boost::system::error_code ec, std::size_t) {
                       if (ec) return self->on_read_error(ec);
                       self->process();
                     });
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
    close();  // the peer went away, a timeout (slow client), or shutdown
  }

  // Answers an error and closes the connection.
  void fail(int status, const std::string& message) {
    close_after_ = true;
    endpoint_ = Endpoint::kOther;
    respond(error_response(status, message));
  }

  void process() {
    state_ = State::kBusy;
    auto& req = parser_->get();
    keep_alive_ = req.keep_alive();
    http10_ = req.version() == 10;
    Routed routed;
    try {
      HttpRequest r;
      r.method = std::string_view(req.method_string().data(), req.method_string().size());
      r.target = std::string_view(req.target().data(), req.target().size());
      auto field = [&](http::field f) {
        auto it = req.find(f);
        return it == req.end() ? std::string_view()
                               : std::string_view(it->value().data(), it->value().size());
      };
      r.if_none_match = field(http::field::if_none_match);
      auto prefer = req.find("Prefer");
      if (prefer != req.end()) r.prefer = {prefer->value().data(), prefer->value().size()};
      r.body = req.body();
      routed = server_.api.route(r, server_.connections.load(), server_.sources_fn);
    } catch (const std::exception& e) {
      util::log_error("request failed", {{"error", e.what()}});
      routed.response = error_response(500, "internal error");
    }
    parser_.reset();
    endpoint_ = routed.endpoint;
    if (routed.table) {
      query_ = std::move(*routed.table);
      deadline_ = Clock::now() + query_.wait;
      return serve_table();
    }
    respond(std::move(routed.response));
  }

  void serve_table() {
    state_ = State::kBusy;
    for (int attempt = 0; attempt < 4; ++attempt) {
      const bool may_park = attempt < 3 && !server_.stopping && Clock::now() < deadline_;
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
    timer_.expires_at(deadline_);
    timer_.async_wait([self = this->shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->on_park_timeout();
    });
    // Notices a client that goes away while parked.
    tcp_layer().socket().async_wait(
        tcp::socket::wait_read, [self = this->shared_from_this()](boost::system::error_code ec) {
          if (!ec) self->on_parked_readable();
        });
  }

  void unparked() {
    parked_ = false;
    timer_.cancel();
    boost::system::error_code ignored;
    tcp_layer().socket().cancel(ignored);
  }

  void on_wake() {
    if (!parked_) return;
    unparked();
    serve_table();
  }

  void on_park_timeout() {
    if (!parked_) return;
    // If unpark fails, a wake-up is already on its way and answers.
    if (server_.shared->waiters.unpark(park_key_, this)) {
      unparked();
      serve_table();
    }
  }

  void on_parked_readable() {
    if (!parked_) return;
    char c = 0;
    const auto n = ::recv(tcp_layer().socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) return;  // data: later
    if (server_.shared->waiters.unpark(park_key_, this)) {
      unparked();
      close();
    }
  }

  void respond(HttpResponse r) {
    state_ = State::kBusy;
    server_.shared->metrics.count_request(endpoint_, r.status);
    response_ = std::move(r);
    const bool close = close_after_ || !keep_alive_ || server_.stopping;
    close_after_ = close;
    head_.clear();
    head_ += "HTTP/1.1 ";
    head_ += std::to_string(response_.status);
    head_ += ' ';
    const auto reason = http::obsolete_reason(http::int_to_status(response_.status));
    head_.append(reason.data(), reason.size());
    head_ += "\r\n";
    const bool body = response_.status != 304;
    if (body) {
      head_ += "Content-Type: ";
      head_ += response_.content_type;
      head_ += "\r\nContent-Length: ";
      head_ += std::to_string(response_.body_bytes().size());
      head_ += "\r\n";
    }
    head_ += response_.headers;
    if (close) {
      head_ += "Connection: close\r\n";
    } else if (http10_) {
      head_ += "Connection: keep-alive\r\n";
    }
    head_ += "\r\n";
    const auto b = response_.body_bytes();
    std::array<asio::const_buffer, 2> buffers{asio::buffer(head_),
                                              asio::buffer(b.data(), body ? b.size() : 0)};
    tcp_layer().expires_after(server_.options.idle_timeout);
    asio::async_write(stream_, buffers,
                      [self = this->shared_from_this()](boost::system::error_code ec, std::size_t) {
                        self->on_write(ec);
                      });
  }

  void on_write(boost::system::error_code ec) {
    response_ = HttpResponse{};
    if (ec) return close();
    if (close_after_) return graceful_close();
    wait_idle();
  }

  void graceful_close() {
    if constexpr (kTls) {
      tcp_layer().expires_after(std::chrono::seconds(2));
      stream_.async_shutdown(
          [self = this->shared_from_this()](boost::system::error_code) { self->close(); });
    } else {
      boost::system::error_code ignored;
      tcp_layer().socket().shutdown(tcp::socket::shutdown_send, ignored);
      close();
    }
  }

  void close() {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    timer_.cancel();
    boost::system::error_code ignored;
    tcp_layer().socket().close(ignored);
  }

  ServerImpl& server_;
  asio::any_io_executor executor_;
  std::shared_ptr<ssl::context> ctx_;  // outlives the stream that refers to it
  Stream stream_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::unique_ptr<http::request_parser<http::string_body>> parser_;
  State state_ = State::kIdle;
  Endpoint endpoint_ = Endpoint::kOther;
  bool keep_alive_ = true, http10_ = false, close_after_ = false, parked_ = false;
  TableQuery query_;
  Clock::time_point deadline_;
  std::string park_key_;
  std::string head_;
  HttpResponse response_;
};

}  // namespace

void ServerImpl::accept() {
  acceptor.async_accept(asio::make_strand(ioc),
                        [this](boost::system::error_code ec, tcp::socket socket) {
                          on_accept(ec, std::move(socket));
                        });
}

void ServerImpl::refuse(tcp::socket& socket) {
  static constexpr std::string_view kBusy =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Content-Length: 40\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
      "{\"error\":\"too many connections; retry\"}\n";
  boost::system::error_code ignored;
  socket.non_blocking(true, ignored);
  socket.write_some(asio::buffer(kBusy.data(), kBusy.size()), ignored);
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
  shared->metrics.count_request(Endpoint::kOther, 503);
}

void ServerImpl::on_accept(boost::system::error_code ec, tcp::socket socket) {
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
      auto s = std::make_shared<Session<true>>(*this, std::move(socket), std::move(ctx));
      add_session(s);
      s->start();
    } else {
      auto s = std::make_shared<Session<false>>(*this, std::move(socket), nullptr);
      add_session(s);
      s->start();
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
  s.work.emplace(s.ioc.get_executor());
  asio::post(s.control, [&s] {
    s.accept();
    if (s.tls) s.check_tls();
  });
  int n = s.options.threads > 0 ? s.options.threads
                                : static_cast<int>(std::thread::hardware_concurrency());
  n = std::max(n, 1);
  for (int i = 0; i < n; ++i) {
    s.threads.emplace_back([&s] {
      for (;;) {
        try {
          s.ioc.run();
          return;
        } catch (const std::exception& e) {
          util::log_error("HTTP worker caught an exception; continuing", {{"error", e.what()}});
        } catch (...) {
          util::log_error("HTTP worker caught an unknown exception; continuing");
        }
      }
    });
  }
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
  s.work.reset();
  s.ioc.stop();
  for (auto& t : s.threads) t.join();
  s.threads.clear();
  util::log_info("server stopped");
}

}  // namespace tollgate::server
