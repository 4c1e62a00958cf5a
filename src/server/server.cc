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

ApiOptions api_options(const ServerOptions& o) {
  ApiOptions a{o.max_wait, o.staleness, o.failures, {}, o.extra_metrics};
  if (o.access) a.reviews = [access = o.access.get()] { return access->stats(); };
  return a;
}

class Controller;

// A parked long-poll: registered on its pod in the WaitList until a publish for that pod wakes
// its connection, or its wait ends. With an identity, every answer re-checks that it may read
// the pod's table (the pod may have been recreated as another one).
class TableWait final : public http::Deferred {
 public:
  TableWait(const Controller& c, http::Exchange& x, Endpoint e, TableQuery q,
            Clock::time_point until, std::shared_ptr<const auth::Identity> who)
      : c_(c), x_(x), endpoint_(e), query_(std::move(q)), until_(until), who_(std::move(who)) {}

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
  std::shared_ptr<const auth::Identity> who_;  // null: --auth none
  std::string key_;                            // the pod parked on, while parked
  const http::Waker* parked_as_ = nullptr;     // set while parked
};

class Controller final : public http::Handler {
 public:
  Controller(const ServerOptions& o, const std::shared_ptr<Shared>& shared)
      : shared_(shared),
        access_(o.access),
        review_budget_(o.review_budget),
        api_(api_options(o), shared->waiters, shared->metrics) {
    sources_fn_ = [this] {
      std::lock_guard lock(sources_mu_);
      return sources_ ? sources_() : std::vector<SourceStats>{};
    };
  }

  http::HandlerOptions options() const override {
    http::HandlerOptions o;
    o.headers = {"if-none-match", "prefer", "authorization"};  // Request::fields[0], [1], [2]
    return o;
  }
  http::Answer handle(const http::Request& r, http::Exchange& x) override;
  // Answers `req` for `who` (null: --auth none, or an open endpoint); a table long-poll waits
  // until `until` at the latest.
  http::Answer serve(const HttpRequest& req, http::Exchange& x,
                     std::shared_ptr<const auth::Identity> who, Clock::time_point until) const;
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
  Access* access() const { return access_.get(); }

 private:
  std::shared_ptr<Shared> shared_;
  std::shared_ptr<Access> access_;
  std::chrono::seconds review_budget_;  // how long a request may wait for its reviews
  Api api_;
  std::mutex sources_mu_;
  std::function<std::vector<SourceStats>()> sources_;  // guarded by sources_mu_
  Api::SourceStatsFn sources_fn_;                      // reads `sources_` under the lock
  const http::Server* http_ = nullptr;                 // for the connection count
  std::atomic<bool> stopping_{false};
};

// A request waiting for its caller's reviews (TokenReview, SubjectAccessReview) on the review
// threads; once they are in, it is served like any other, and may then park as a long-poll.
// The endpoint a refusal is counted under before the request is routed.
Endpoint endpoint_of(const Requirement& need) {
  return need.kind == Requirement::Kind::kTable ? Endpoint::kTable : Endpoint::kOther;
}

class ReviewWait final : public http::Deferred {
 public:
  ReviewWait(const Controller& c, http::Exchange& x, const http::Request& r, Requirement need,
             Clock::time_point until)
      : c_(c),
        x_(x),
        method_(r.method),
        target_(r.target),
        if_none_match_(r.fields[0]),
        prefer_(r.fields[1]),
        authorization_(r.fields[2]),
        body_(r.body),
        need_(std::move(need)),
        until_(until),
        slot_(std::make_shared<Slot>()) {}

  // Queues the reviews; false when the review threads are saturated.
  bool start(std::string_view peer_principal) {
    return c_.access()->submit([slot = slot_, waker = x_.waker(), access = c_.access(),
                                authorization = authorization_,
                                principal = std::string(peer_principal), need = need_] {
      auto step = access->check(authorization, principal, need);
      {
        std::lock_guard lock(slot->mu);
        slot->step = std::move(step);
      }
      waker->wake();
    });
  }

  std::optional<http::Response> resume(bool timed_out) override {
    if (inner_) return inner_->resume(timed_out);
    std::optional<AccessStep> step;
    {
      std::lock_guard lock(slot_->mu);
      step = std::move(slot_->step);
    }
    if (!step) {
      if (!timed_out) return std::nullopt;  // not this request's wake-up
      return counted(c_.access()->unavailable("the reviews of this request took too long"));
    }
    if (step->refusal) return counted(std::move(*step->refusal));
    const HttpRequest req{method_, target_, if_none_match_, prefer_, body_};
    http::Answer a = c_.serve(req, x_, std::move(step->identity), until_);
    if (!a.later) return std::move(a.response);
    inner_ = std::move(a.later);  // a parked long-poll, due by until_ as this is
    return std::nullopt;
  }

  void cancel() override {
    if (inner_) inner_->cancel();
  }

 private:
  http::Response counted(http::Response r) const {
    c_.count(endpoint_of(need_), r.status);
    return r;
  }

  struct Slot {
    std::mutex mu;
    std::optional<AccessStep> step;  // guarded by mu
  };
  const Controller& c_;
  http::Exchange& x_;
  std::string method_, target_, if_none_match_, prefer_, authorization_, body_;
  Requirement need_;
  Clock::time_point until_;
  std::shared_ptr<Slot> slot_;  // shared with the review job
  std::unique_ptr<http::Deferred> inner_;
};

http::Answer Controller::handle(const http::Request& r, http::Exchange& x) {
  const HttpRequest req{r.method, r.target, r.fields[0], r.fields[1], r.body};
  if (!access_) return serve(req, x, nullptr, Clock::time_point::max());
  Requirement need = requirement_of(req);
  if (need.kind == Requirement::Kind::kOpen) {
    return serve(req, x, nullptr, Clock::time_point::max());
  }
  const Endpoint endpoint = endpoint_of(need);
  AccessStep step = access_->check_cached(r.fields[2], x.peer_principal(), need);
  if (step.refusal) {
    count(endpoint, step.refusal->status);
    return http::Answer::now(std::move(*step.refusal));
  }
  if (!step.needs_review()) {
    return serve(req, x, std::move(step.identity), Clock::time_point::max());
  }
  // A long-poll waits for its reviews and then its table; anything else for its reviews.
  auto until = Clock::now() + review_budget_;
  if (need.kind == Requirement::Kind::kTable) {
    const Routed routed = api_.route(req, 0, {});
    if (routed.table) until = std::max(until, Clock::now() + routed.table->wait);
  }
  auto wait = std::make_unique<ReviewWait>(*this, x, r, std::move(need), until);
  if (!wait->start(x.peer_principal())) {
    count(endpoint, 503);
    return http::Answer::now(access_->unavailable("too many requests wait for a review"));
  }
  return http::Answer::defer(std::move(wait), until);
}

http::Answer Controller::serve(const HttpRequest& req, http::Exchange& x,
                               std::shared_ptr<const auth::Identity> who,
                               Clock::time_point until) const {
  Endpoint endpoint = Endpoint::kOther;
  try {
    Routed routed = api_.route(req, http_ != nullptr ? http_->connections() : 0, sources_fn_);
    endpoint = routed.endpoint;
    if (!routed.table) {
      count(endpoint, routed.response.status);
      return http::Answer::now(std::move(routed.response));
    }
    const auto snapshot = waiters().snapshot();
    if (who != nullptr) {
      const TableQuery& q = *routed.table;
      if (auto refusal = Access::table_refusal(*who, *snapshot, q.ns, q.pod, q.ip)) {
        count(endpoint, refusal->status);
        return http::Answer::now(std::move(*refusal));
      }
    }
    // Most table requests are answered at once, without a TableWait.
    auto first = api_.table(snapshot, *routed.table, may_park());
    if (first.park_key.empty()) {
      count(endpoint, first.response.status);
      return http::Answer::now(std::move(first.response));
    }
    until = std::min(until, Clock::now() + routed.table->wait);
    auto wait = std::make_unique<TableWait>(*this, x, endpoint, std::move(*routed.table), until,
                                            std::move(who));
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
    const auto snapshot = waiters.snapshot();
    if (who_) {
      auto refusal = Access::table_refusal(*who_, *snapshot, query_.ns, query_.pod, query_.ip);
      if (refusal) {
        c_.count(endpoint_, refusal->status);
        return std::move(*refusal);
      }
    }
    auto answer = c_.api().table(snapshot, query_, may_park);
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
        access(o.access),
        controller(o, shared),
        http(http_options(o), controller) {
    controller.set_http(&http);
  }
  ~ServerImpl() { stop(); }
  ServerImpl(const ServerImpl&) = delete;
  ServerImpl& operator=(const ServerImpl&) = delete;
  // The HTTP core first (no new reviews), then the review threads: a review in flight ends
  // (and wakes its connection) while the HTTP core's workers still exist.
  void stop() {
    http.shutdown();
    if (access) access->stop();
  }
  std::shared_ptr<Shared> shared;
  std::shared_ptr<Access> access;
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
void Server::shutdown() { impl_->stop(); }
std::size_t Server::parked() const { return impl_->shared->waiters.parked(); }
std::size_t Server::connections() const { return impl_->http.connections(); }
std::shared_ptr<const publish::Snapshot> Server::snapshot() const {
  return impl_->shared->waiters.snapshot();
}

}  // namespace tollgate::server
