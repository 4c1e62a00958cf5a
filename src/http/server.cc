// The listener, the workers and the TLS context of the HTTP core: accepts on the control
// thread, hands each connection to a worker (driver.cc), reloads the certificate when its
// files change, and shuts down gracefully.
#include <utility>  // before any Boost header (GCC 12 + C++20)

#include "tollgate/http/server.h"

#include <boost/asio/post.hpp>

#include "core.h"
#include "tollgate/util/file.h"
#include "tollgate/util/log.h"

namespace tollgate::http {

namespace {

namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;

// A certificate chain, a key or a CA bundle is a few KiB; anything near this is not one.
constexpr std::size_t kMaxTlsFileBytes = std::size_t{1} << 20;

util::Result<TlsFiles> read_tls_files(const ServerOptions& o) {
  TlsFiles f;
  TOLLGATE_TRY(cert, util::read_file(o.tls_cert_file, kMaxTlsFileBytes));
  TOLLGATE_TRY(key, util::read_file(o.tls_key_file, kMaxTlsFileBytes));
  f.cert = std::move(cert);
  f.key = std::move(key);
  if (!o.tls_client_ca_file.empty()) {
    TOLLGATE_TRY(ca, util::read_file(o.tls_client_ca_file, kMaxTlsFileBytes));
    f.client_ca = std::move(ca);
  }
  return f;
}

util::Result<std::shared_ptr<ssl::context>> make_tls(const TlsFiles& f) {
  try {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                     ssl::context::single_dh_use);
    ctx->use_certificate_chain(asio::buffer(f.cert));
    ctx->use_private_key(asio::buffer(f.key), ssl::context::pem);
    if (!f.client_ca.empty()) {
      ctx->add_certificate_authority(asio::buffer(f.client_ca));
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
  ErrorCode ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) return util::make_error("--listen " + listen + ": not an IP address: " + host);
  return tcp::endpoint(addr, static_cast<std::uint16_t>(p));
}

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

ServerCore::ServerCore(ServerOptions o, Handler& h) : options(std::move(o)), handler(h) {
  settings.limits = options.limits;
  settings.request = handler.options();
  settings.handler = &handler;
}

bool ServerCore::add_session(const std::shared_ptr<Session>& s) {
  std::lock_guard lock(conn_mu);
  if (settings.draining) return false;
  sessions.emplace(s.get(), s);
  return true;
}

void ServerCore::remove_session(Session* s) {
  std::lock_guard lock(conn_mu);
  sessions.erase(s);
  connections.fetch_sub(1);
  conn_cv.notify_all();
}

void ServerCore::accept() {
  Worker& worker = *workers[next_worker++ % workers.size()];
  acceptor.async_accept(worker.ioc, [this, &worker](ErrorCode ec, Socket socket) {
    on_accept(ec, worker, std::move(socket));
  });
}

void ServerCore::refuse(Socket& socket) {
  static constexpr std::string_view kBusy =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Content-Length: 40\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
      "{\"error\":\"too many connections; retry\"}\n";
  ErrorCode ignored;
  socket.non_blocking(true, ignored);
  socket.write_some(asio::buffer(kBusy.data(), kBusy.size()), ignored);
  socket.shutdown(Socket::shutdown_both, ignored);
  socket.close(ignored);
  handler.refused(503);
}

void ServerCore::on_accept(ErrorCode ec, Worker& worker, Socket socket) {
  if (settings.draining) return;
  if (ec) {
    if (ec == asio::error::operation_aborted) return;
    util::log_warn("accept failed", {{"error", ec.message()}});
    accept_retry.expires_after(std::chrono::milliseconds(50));  // e.g. out of descriptors
    accept_retry.async_wait([this](ErrorCode e) {
      if (!e && !settings.draining) accept();
    });
    return;
  }
  if (connections.load() >= options.max_connections) {
    refuse(socket);
  } else {
    ErrorCode ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    connections.fetch_add(1);  // the session's destructor takes it back
    start_session(*this, worker, std::move(socket), tls_context());
  }
  accept();
}

void ServerCore::check_tls() {
  tls_timer.expires_after(options.tls_reload_interval);
  tls_timer.async_wait([this](ErrorCode ec) {
    if (ec || settings.draining) return;
    reload_tls();
    check_tls();
  });
}

// Loads the TLS files again if they changed since last time; a change that does not load (or
// files that cannot be read) is logged once and the previous certificate kept.
void ServerCore::reload_tls() {
  auto files = read_tls_files(options);
  std::string problem;
  if (!files.ok()) {
    problem = files.error().message;
  } else if (*files != tls_files_seen) {
    tls_files_seen = std::move(*files);
    auto ctx = make_tls(tls_files_seen);
    if (!ctx.ok()) {
      problem = ctx.error().message;
    } else {
      std::lock_guard lock(tls_mu);
      tls = std::move(*ctx);
      util::log_info("TLS certificate reloaded", {{"cert", options.tls_cert_file}});
    }
  }
  if (!problem.empty() && problem != tls_problem) {
    util::log_warn("TLS files changed but do not load; keeping the previous certificate",
                   {{"error", problem}});
  }
  tls_problem = std::move(problem);
}

Server::Server(ServerOptions options, Handler& handler)
    : core_(std::make_unique<ServerCore>(std::move(options), handler)) {}

Server::~Server() {
  try {
    shutdown();
  } catch (const std::exception& e) {  // a destructor must not throw; log and go on
    util::log_error("server shutdown failed", {{"error", e.what()}});
  } catch (...) {
    util::log_error("server shutdown failed");
  }
}

util::Status Server::start() {
  auto& s = *core_;
  if (s.started) return util::make_error("the server was already started");
  TOLLGATE_TRY(endpoint, parse_listen(s.options.listen));
  const bool tls = !s.options.tls_cert_file.empty() || !s.options.tls_key_file.empty();
  if (tls) {
    if (s.options.tls_cert_file.empty() || s.options.tls_key_file.empty()) {
      return util::make_error("TLS needs both a certificate and a key file");
    }
    auto files = read_tls_files(s.options);
    if (!files.ok()) return util::make_error("TLS: " + files.error().message);
    s.tls_files_seen = std::move(*files);
    TOLLGATE_TRY(ctx, make_tls(s.tls_files_seen));
    s.tls = std::move(ctx);
  } else if (!s.options.tls_client_ca_file.empty()) {
    return util::make_error("a client CA needs TLS: give a certificate and a key file");
  }
  ErrorCode ec;
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
  return util::ok();
}

std::uint16_t Server::port() const { return core_->port.load(); }
std::size_t Server::connections() const { return core_->connections.load(); }

void Server::shutdown() {
  auto& s = *core_;
  if (!s.started || s.stopped) return;
  s.stopped = true;
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(s.conn_mu);
    s.settings.draining = true;  // under the lock: no session starts after this snapshot
    for (auto& [_, weak] : s.sessions) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
  }
  asio::post(s.control, [&s] {
    ErrorCode ignored;
    s.acceptor.close(ignored);
    s.tls_timer.cancel();
    s.accept_retry.cancel();
  });
  // Told to stop before the handler wakes deferred answers, so that those answers close too.
  for (const auto& session : live) session->stop();  // idle connections close
  live.clear();                                      // outside the lock: this may destroy a session
  s.handler.drain();
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

}  // namespace tollgate::http
