// The decision service on the HTTP core: a Handler that routes requests to the Api and parks
// table long-polls in the WaitList as deferred answers; the publish listener wakes them.
// Networking, limits and threads are the HTTP core's (src/http).
#include "tollgate/server/server.h"

#include <atomic>
#include <mutex>

#include "tollgate/http/server.h"
#include "tollgate/server/api.h"
#include "tollgate/util/log.h"

namespace tollgate::server {

namespace {

using Clock = std::chrono::steady_clock;

// What the publish listener and the connections share; it outlives the Server because the
// publisher keeps the listener.
struct Shared {
  explicit Shared(std::shared_ptr<const publish::Snapshot> first) : waiters(std::move(first)) {}
  WaitList waiters;
  Metrics metrics;
};

http::ServerOptions http_options(const ServerOptions& o) {
  http::ServerOptions h;
  h.listen = o.listen;
  h.threads = o.threads;
  h.limits.max_header_bytes = o.max_header_bytes;
  h.limits.max_body_bytes = o.max_body_bytes;
  h.limits.header_timeout = o.header_timeout;
  h.limits.body_timeout = o.body_timeout;
  h.limits.idle_timeout = o.idle_timeout;
  h.max_connections = o.max_connections;
  h.tls_cert_file = o.tls_cert_file;
  h.tls_key_file = o.tls_key_file;
  h.tls_client_ca_file = o.tls_client_ca_file;
  h.tls_reload_interval = o.tls_reload_interval;
  return h;
}

class Controller;

// A parked long-poll: registered on its pod in the WaitList until a publish for that pod wakes
// its connection, or its wait ends.
class TableWait final : public http::Deferred {
 public:
  TableWait(const Controller& c, http::Exchange& x, Endpoint e, TableQuery q,
            Clock::time_point until)
      : c_(c), x_(x), endpoint_(e), query_(std::move(q)), until_(until) {}

  // Answers from the current snapshot, or parks (nullopt) while the client has the current
  // table and its wait lasts.
  std::optional<http::Response> serve();
  std::optional<http::Response> resume(bool timed_out) override;
  void cancel() override;

 private:
  const Controller& c_;
  http::Exchange& x_;  // the connection; it owns this
  Endpoint endpoint_;
  TableQuery query_;
  Clock::time_point until_;
  std::string key_;                         // the pod parked on, while parked
  const http::Waker* parked_as_ = nullptr;  // set while parked
};

class Controller final : public http::Handler {
 public:
  Controller(const ServerOptions& o, const std::shared_ptr<Shared>& shared)
      : shared_(shared),
        api_(ApiOptions{o.max_wait, o.staleness, o.failures}, shared->waiters, shared->metrics) {
    sources_fn_ = [this] {
      std::lock_guard lock(sources_mu_);
      return sources_ ? sources_() : std::vector<SourceStats>{};
    };
  }

  http::HandlerOptions options() const override {
    http::HandlerOptions o;
    o.headers = {"if-none-match", "prefer"};  // Request::fields[0] and [1]
    return o;
  }
  http::Answer handle(const http::Request& r, http::Exchange& x) override;
  void refused(int status) override { count(Endpoint::kOther, status); }
  void drain() override {
    stopping_ = true;
    shared_->waiters.shutdown();  // parked long-polls answer now: 304
  }

  void set_sources(std::function<std::vector<SourceStats>()> f) {
    std::lock_guard lock(sources_mu_);
    sources_ = std::move(f);
  }
  void set_http(const http::Server* s) { http_ = s; }
  void count(Endpoint e, int status) const { shared_->metrics.count_request(e, status); }
  bool may_park() const { return !stopping_.load(std::memory_order_relaxed); }
  WaitList& waiters() const { return shared_->waiters; }
  const Api& api() const { return api_; }

 private:
  std::shared_ptr<Shared> shared_;
  Api api_;
  std::mutex sources_mu_;
  std::function<std::vector<SourceStats>()> sources_;  // guarded by sources_mu_
  Api::SourceStatsFn sources_fn_;                      // reads `sources_` under the lock
  const http::Server* http_ = nullptr;                 // for the connection count
  std::atomic<bool> stopping_{false};
};

http::Answer Controller::handle(const http::Request& r, http::Exchange& x) {
  Endpoint endpoint = Endpoint::kOther;
  try {
    const HttpRequest req{r.method, r.target, r.fields[0], r.fields[1], r.body};
    Routed routed = api_.route(req, http_ != nullptr ? http_->connections() : 0, sources_fn_);
    endpoint = routed.endpoint;
    if (!routed.table) {
      count(endpoint, routed.response.status);
      return http::Answer::now(std::move(routed.response));
    }
    // Most table requests are answered at once, without a TableWait.
    auto first = api_.table(waiters().snapshot(), *routed.table, may_park());
    if (first.park_key.empty()) {
      count(endpoint, first.response.status);
      return http::Answer::now(std::move(first.response));
    }
    const auto until = Clock::now() + routed.table->wait;
    auto wait = std::make_unique<TableWait>(*this, x, endpoint, std::move(*routed.table), until);
    auto answer = wait->serve();
    if (answer) return http::Answer::now(std::move(*answer));
    return http::Answer::defer(std::move(wait), until);
  } catch (const std::exception& e) {
    util::log_error("request failed", {{"error", e.what()}});
    count(endpoint, 500);
    return http::Answer::now(error_response(500, "internal error"));
  }
}

std::optional<http::Response> TableWait::serve() {
  auto& waiters = c_.waiters();
  for (int attempt = 0; attempt < 4; ++attempt) {
    const bool may_park = attempt < 3 && c_.may_park() && Clock::now() < until_;
    auto answer = c_.api().table(waiters.snapshot(), query_, may_park);
    if (answer.park_key.empty()) {
      c_.count(endpoint_, answer.response.status);
      return std::move(answer.response);
    }
    auto waker = x_.waker();
    const http::Waker* as = waker.get();
    key_ = std::move(answer.park_key);
    if (waiters.park(key_, answer.park_etag, std::move(waker))) {
      parked_as_ = as;
      return std::nullopt;
    }
    // The table changed between the answer and parking: answer again.
  }
  return std::nullopt;  // not reached: the last attempt may not park
}

std::optional<http::Response> TableWait::resume(bool timed_out) {
  // On a timeout, a failed unpark means a wake-up is already on its way: it answers.
  if (timed_out && !c_.waiters().unpark(key_, parked_as_)) return std::nullopt;
  if (!timed_out) util::log_debug("long-poll woken by a publish", {{"pod", key_}});
  parked_as_ = nullptr;
  return serve();
}

void TableWait::cancel() {
  if (parked_as_ != nullptr) c_.waiters().unpark(key_, parked_as_);
  parked_as_ = nullptr;
}

}  // namespace

struct ServerImpl {
  ServerImpl(const ServerOptions& o, publish::Publisher& p)
      : shared(std::make_shared<Shared>(p.current())),
        controller(o, shared),
        http(http_options(o), controller) {
    controller.set_http(&http);
  }
  std::shared_ptr<Shared> shared;
  Controller controller;
  http::Server http;  // declared last: shut down and destroyed before the controller
};

Server::Server(const ServerOptions& options, publish::Publisher& publisher)
    : impl_(std::make_shared<ServerImpl>(options, publisher)) {
  publisher.add_listener(
      [shared = impl_->shared, &publisher](const publish::SnapshotBuilder::Result& r) {
        shared->waiters.publish(r.snapshot, r.changed_pods);
        shared->metrics.on_publish(publisher.stats());
      });
}

Server::~Server() = default;  // ~http::Server shuts down

void Server::set_source_stats(std::function<std::vector<SourceStats>()> f) {
  impl_->controller.set_sources(std::move(f));
}

util::Status Server::start() { return impl_->http.start(); }
std::uint16_t Server::port() const { return impl_->http.port(); }
void Server::shutdown() { impl_->http.shutdown(); }
std::size_t Server::parked() const { return impl_->shared->waiters.parked(); }
std::size_t Server::connections() const { return impl_->http.connections(); }
std::shared_ptr<const publish::Snapshot> Server::snapshot() const {
  return impl_->shared->waiters.snapshot();
}

}  // namespace tollgate::server
