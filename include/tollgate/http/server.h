// The HTTP/1.1 server core, plain or TLS. One listener thread accepts and hands each connection
// to one of `threads` workers; each worker runs its own Asio io_context and owns its
// connections for their whole life. A Connection state machine per connection is driven by
// the Asio driver (src/http/driver.cc); a Handler answers. docs/serving.md has the design.
// start() and shutdown() from one thread; port() and connections() are thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "tollgate/http/connection.h"
#include "tollgate/http/handler.h"
#include "tollgate/util/result.h"

namespace tollgate::http {

struct ServerOptions {
  std::string listen = "127.0.0.1:8080";  // host:port; port 0 = ephemeral (tests)
  int threads = 0;                        // 0 = std::thread::hardware_concurrency()
  Limits limits;
  std::size_t max_connections = 20000;  // beyond: 503 with Retry-After, and closed
  // TLS when cert and key are set; the files are re-read when they change (new connections
  // get the new certificate). A client CA requires and verifies client certificates.
  std::string tls_cert_file, tls_key_file, tls_client_ca_file;
  std::chrono::milliseconds tls_reload_interval{1000};  // how often the files are checked
};

struct ServerCore;  // src/http/core.h

class Server {
 public:
  // `handler` must outlive the server.
  Server(ServerOptions options, Handler& handler);
  ~Server();  // shutdown()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  util::Status start();  // bind, then serve on the worker threads
  std::uint16_t port() const;
  // Graceful: stop accepting, tell every connection to finish (idle ones close, answers say
  // Connection: close), call the handler's drain(), wait up to 10 s for connections to end,
  // join the threads.
  void shutdown();
  std::size_t connections() const;

 private:
  std::unique_ptr<ServerCore> core_;
};

}  // namespace tollgate::http
