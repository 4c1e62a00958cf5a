// Who may ask the controller what (docs/security.md): the caller's identity from a bearer
// token (a TokenReview) or a verified SPIFFE client certificate, a pod's table only for the
// pod's own token or service account, and the operator endpoints only for whoever may list
// AuthorizationPolicies (a SubjectAccessReview). Cached verdicts are checked on the HTTP
// worker without blocking; reviews run on the review threads, and the request waits for them
// as a deferred answer. A review that cannot be had answers 503 with Retry-After, never an
// allow. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tollgate/auth/reviewer.h"
#include "tollgate/http/message.h"
#include "tollgate/publish/snapshot.h"
#include "tollgate/server/api.h"

namespace tollgate::server {

// Where a caller stands: authenticated (and, for an operator endpoint, authorized), refused
// with an answer to send, or waiting for a review.
struct AccessStep {
  std::shared_ptr<const auth::Identity> identity;
  std::optional<http::Response> refusal;  // 401, 403 or 503
  bool needs_review() const { return !identity && !refusal; }
};

struct AccessOptions {
  std::size_t review_threads = 4;       // requests waiting for a review, served at once
  std::size_t max_queued = 4096;        // beyond: 503 at once
  std::chrono::seconds retry_after{2};  // on every 503
};

class Access {
 public:
  explicit Access(std::shared_ptr<auth::Reviewer> reviewer, AccessOptions options = {});
  ~Access();  // stop()
  Access(const Access&) = delete;
  Access& operator=(const Access&) = delete;

  // From the Authorization header and the peer's certificate principal, with cached verdicts
  // only: never blocks (on the HTTP worker).
  AccessStep check_cached(std::string_view authorization, std::string_view peer_principal,
                          const Requirement& need) const;
  // The same, reviewing what is not cached: blocks up to the reviewer's timeout for each
  // review (on a review thread). Never needs_review().
  AccessStep check(std::string_view authorization, std::string_view peer_principal,
                   const Requirement& need) const;

  // Runs `job` on a review thread; false (the job is dropped) when max_queued jobs wait or the
  // threads are stopping: the caller answers unavailable().
  bool submit(std::function<void()> job);
  void stop();  // drops queued jobs, joins the threads

  auth::Reviewer::Stats stats() const { return reviewer_->stats(); }

  // 503 with Retry-After: a review cannot be had now.
  http::Response unavailable(std::string_view why) const;

  // May `who` read the table `ns`/`pod` (or the pod with IP `ip`) of snapshot `s`? nullopt:
  // yes, or the pod is unknown in the caller's own namespace (the table answer says 404);
  // otherwise the 403 to send, naming no pod but the caller's own.
  static std::optional<http::Response> table_refusal(const auth::Identity& who,
                                                     const publish::Snapshot& s,
                                                     std::string_view ns, std::string_view pod,
                                                     std::string_view ip);

 private:
  AccessStep step(std::string_view authorization, std::string_view peer_principal,
                  const Requirement& need, bool may_review) const;
  void run();

  std::shared_ptr<auth::Reviewer> reviewer_;
  const AccessOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace tollgate::server
