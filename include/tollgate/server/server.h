// The decision service: serves the published snapshots over HTTP/1.1 (optionally TLS) on the
// HTTP core (tollgate/http/server.h: listener, `threads` workers each with its own Asio
// io_context). Long-polls are deferred answers parked without a thread and woken per pod, in
// one batch per worker when a snapshot is published. docs/serving.md has the design and figures.
// Construct before publisher.start(); start() and shutdown() from one thread. port(),
// parked() and connections() are thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tollgate/publish/publisher.h"
#include "tollgate/server/access.h"
#include "tollgate/server/metrics.h"
#include "tollgate/util/result.h"
#include "tollgate/util/thread_failure.h"

namespace tollgate::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:8080";  // host:port; port 0 = ephemeral (tests)
  int threads = 0;                        // 0 = std::thread::hardware_concurrency()
  std::chrono::seconds max_wait{300};     // long-poll cap
  // /readyz turns 503 when every source kind has been unhealthy this long.
  std::chrono::seconds staleness{300};
  std::size_t max_header_bytes = std::size_t{16} * 1024, max_body_bytes = std::size_t{1} << 20;
  std::chrono::seconds header_timeout{10}, idle_timeout{60}, body_timeout{30};
  std::size_t max_connections = 20000;
  // TLS when cert and key are set; the files are re-read when they change (new connections
  // get the new certificate). A client CA requires and verifies client certificates.
  std::string tls_cert_file, tls_key_file, tls_client_ca_file;
  std::chrono::milliseconds tls_reload_interval{1000};  // how often the files are checked
  // When set and a controller thread has died, /readyz answers 503 naming it.
  const util::ThreadFailures* failures = nullptr;
  // Who may read which table and ask the operator endpoints (docs/security.md); null: anyone
  // (--auth none). The server stops it on shutdown.
  std::shared_ptr<Access> access;
  // How long a request may wait for its caller's reviews before 503 (a long-poll: at least
  // its own wait).
  std::chrono::seconds review_budget{15};
  // More metrics in the text format, appended to /metrics (leader election, status writes).
  // Called on an HTTP worker; must be thread-safe.
  std::function<std::string()> extra_metrics;
};

struct ServerImpl;  // server.cc

class Server {
 public:
  // Registers a publish listener: construct BEFORE publisher.start().
  Server(const ServerOptions& options, publish::Publisher& publisher);
  ~Server();  // shutdown()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  util::Status start();  // bind, then serve on the worker threads
  std::uint16_t port() const;
  // Graceful: stop accepting, answer parked long-polls with 304, close idle connections,
  // let requests in flight finish, join the threads.
  void shutdown();
  // Extra metrics (watch events, errors and relists by kind). Thread-safe, any time.
  void set_source_stats(std::function<std::vector<SourceStats>()> f);

  std::size_t parked() const;
  std::size_t connections() const;
  // The snapshot answers come from: the publisher's, once the publish listener has run.
  std::shared_ptr<const publish::Snapshot> snapshot() const;

 private:
  std::shared_ptr<ServerImpl> impl_;
};

}  // namespace tollgate::server
