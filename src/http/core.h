// What the listener (server.cc) and the Asio driver (driver.cc) share: the worker threads,
// the registry of live connections, the TLS context. A worker's io_context runs on its one
// thread; the registry and the TLS context are locked; everything else is set before the
// threads start.
#pragma once

#include <utility>  // before any Boost header (GCC 12 + C++20)

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tollgate/http/server.h"

namespace tollgate::http {

namespace asio = boost::asio;
using Executor = asio::io_context::executor_type;
using Socket = asio::basic_stream_socket<asio::ip::tcp, Executor>;

// A connection as the server sees it (driver.cc implements it per socket kind).
class Session : public Waker {
 public:
  virtual void stop() = 0;     // any thread: finish the request in hand, then close
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
  std::mutex mu;
  std::vector<std::shared_ptr<Session>> woken;  // guarded by mu

  // Many wake-ups at once (one publish) are queued and handled by one posted handler.
  void wake(std::shared_ptr<Session> s);
  void drain();
};

// The TLS files' contents (certificate chain, key, client CA), read once for both the change
// check and the context.
struct TlsFiles {
  std::string cert, key, client_ca;
  bool operator==(const TlsFiles&) const = default;
};

struct ServerCore {
  ServerCore(ServerOptions o, Handler& h);

  // The listener (server.cc).
  void accept();
  void on_accept(boost::system::error_code ec, Worker& worker, Socket socket);
  void refuse(Socket& socket);
  void check_tls();
  void reload_tls();
  std::shared_ptr<asio::ssl::context> tls_context() {
    std::lock_guard lock(tls_mu);
    return tls;
  }
  // The registry. add_session() is false once shutdown has begun (settings.draining, set under
  // conn_mu): the session must not start. Every session's destructor calls remove_session().
  bool add_session(const std::shared_ptr<Session>& s);
  void remove_session(Session* s);

  ServerOptions options;
  Handler& handler;
  Settings settings;  // shared by every Connection
  std::atomic<std::uint16_t> port{0};
  bool started = false, stopped = false;

  // Declared before the io_contexts: sessions destroyed with them still reach these.
  std::mutex conn_mu;
  std::condition_variable conn_cv;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;  // guarded by conn_mu
  std::atomic<std::size_t> connections{0};
  std::mutex tls_mu;
  std::shared_ptr<asio::ssl::context> tls;  // guarded by tls_mu
  TlsFiles tls_files_seen;  // the files' contents last loaded (or tried); control thread
  std::string tls_problem;  // the last reload problem logged; control thread

  std::vector<std::unique_ptr<Worker>> workers;
  std::size_t next_worker = 0;  // on the control thread
  // The control thread: the acceptor and the TLS file check.
  asio::io_context control{1};
  std::optional<asio::executor_work_guard<Executor>> control_work;
  std::thread control_thread;
  asio::ip::tcp::acceptor acceptor{control};
  asio::steady_timer tls_timer{control};
  asio::steady_timer accept_retry{control};
};

// Starts serving `socket` on `worker` (driver.cc); the session registers itself.
void start_session(ServerCore& core, Worker& worker, Socket socket,
                   std::shared_ptr<asio::ssl::context> tls);

}  // namespace tollgate::http
