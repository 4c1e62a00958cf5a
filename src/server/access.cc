#include "tollgate/server/access.h"

#include "tollgate/index/index.h"
#include "tollgate/server/api.h"
#include "tollgate/util/log.h"
#include "tollgate/util/strings.h"

namespace tollgate::server {
namespace {

http::Response refuse(int status, std::string_view why) {
  auto r = error_response(status, why);
  if (status == 401) r.headers = "WWW-Authenticate: Bearer realm=\"tollgate\"\r\n";
  return r;
}

}  // namespace

Access::Access(std::shared_ptr<auth::Reviewer> reviewer, AccessOptions options)
    : reviewer_(std::move(reviewer)), options_(options) {
  const std::size_t n = options_.review_threads == 0 ? 1 : options_.review_threads;
  threads_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) threads_.emplace_back([this] { run(); });
}

Access::~Access() { stop(); }

void Access::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

bool Access::submit(std::function<void()> job) {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || queue_.size() >= options_.max_queued) return false;
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
  return true;
}

void Access::run() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    auto thrown = util::run_catching(job);  // a job's failure is its request's, not ours
    if (thrown) util::log_error("an access review failed", {{"error", *thrown}});
  }
}

http::Response Access::unavailable(std::string_view why) const {
  auto r = error_response(503, why);
  r.headers = "Retry-After: " + std::to_string(options_.retry_after.count()) + "\r\n";
  return r;
}

AccessStep Access::check_cached(std::string_view authorization, std::string_view peer_principal,
                                const Requirement& need) const {
  return step(authorization, peer_principal, need, false);
}

AccessStep Access::check(std::string_view authorization, std::string_view peer_principal,
                         const Requirement& need) const {
  return step(authorization, peer_principal, need, true);
}

AccessStep Access::step(std::string_view authorization, std::string_view peer_principal,
                        const Requirement& need, bool may_review) const {
  AccessStep out;
  if (need.kind == Requirement::Kind::kOpen) {
    static const auto anyone = std::make_shared<const auth::Identity>();
    out.identity = anyone;
    return out;
  }
  std::shared_ptr<const auth::Identity> who;
  authorization = util::trim(authorization);
  if (!authorization.empty()) {
    // RFC 7235: the scheme is case-insensitive; one space (or more) before the token.
    const auto space = authorization.find(' ');
    const std::string_view token =
        space == std::string_view::npos ? "" : util::trim(authorization.substr(space + 1));
    if (util::lowered(authorization.substr(0, space)) != "bearer" || token.empty()) {
      out.refusal = refuse(401, "the Authorization header is not \"Bearer <token>\"");
      return out;
    }
    const std::string t(token);
    auto v = may_review ? std::optional(reviewer_->review_token(t)) : reviewer_->cached_token(t);
    if (!v) return out;  // needs a review
    if (v->outcome == auth::Outcome::kRefused) {
      out.refusal = refuse(401, "the token is not accepted: " + v->reason);
      return out;
    }
    if (v->outcome == auth::Outcome::kUnavailable) {
      out.refusal = unavailable(v->reason);
      return out;
    }
    who = std::move(v->identity);
  } else if (!peer_principal.empty()) {
    auto id = auth::identity_from_spiffe(peer_principal);
    if (!id) {
      out.refusal = refuse(403, "the client certificate's SPIFFE id names no service account");
      return out;
    }
    who = std::make_shared<const auth::Identity>(std::move(*id));
  } else {
    out.refusal = refuse(401,
                         "an Authorization: Bearer token (a service-account token for the "
                         "audience tollgate) or a client certificate is required");
    return out;
  }
  if (need.kind == Requirement::Kind::kOperator) {
    auto a = may_review ? std::optional(reviewer_->may_list_policies(*who, need.ns))
                        : reviewer_->cached_access(*who, need.ns);
    if (!a) return out;  // needs a review
    if (a->outcome == auth::Outcome::kRefused) {
      out.refusal = refuse(403, a->reason);
      return out;
    }
    if (a->outcome == auth::Outcome::kUnavailable) {
      out.refusal = unavailable(a->reason);
      return out;
    }
  }
  out.identity = std::move(who);
  return out;
}

std::optional<http::Response> Access::table_refusal(const auth::Identity& who,
                                                    const publish::Snapshot& s, std::string_view ns,
                                                    std::string_view pod, std::string_view ip) {
  if (!s.synced) return std::nullopt;  // the table answer says 503: not synced yet
  const publish::PodEntry* e = ip.empty() ? s.find(ns, pod) : s.find_ip(ip);
  auth::PodRef ref;
  if (e != nullptr) {
    ref = {e->pod->shape->namespace_, e->pod->name, "", e->pod->shape->service_account};
    // The index keeps a digest of the uid: the token's pod uid is this pod's when it matches.
    if (!who.pod_uid.empty()) {
      ref.uid = index::uid_digest(who.pod_uid) == e->pod->uid ? who.pod_uid : "another pod";
    }
  } else {
    // Only the caller's own namespace learns that a pod is not known (yet): a 404 follows.
    if (ip.empty() && !who.sa_namespace.empty() && who.sa_namespace == ns &&
        (who.pod_name.empty() || who.pod_name == pod)) {
      return std::nullopt;
    }
    ref = {std::string(ns), std::string(pod), "", ""};  // refused below, named by the caller
  }
  auto allowed = auth::may_read_table(who, ref);
  if (allowed.ok()) return std::nullopt;
  return refuse(403, allowed.error().message);
}

}  // namespace tollgate::server
