// Asks the API server who a bearer token belongs to (TokenReview) and whether an identity may
// list AuthorizationPolicies (SubjectAccessReview), for the controller's access control
// (docs/security.md). Verdicts are cached in bounded caches, keyed by a hash of the token
// (never the token): a token's verdict until the token expires or `token_ttl` passes,
// whichever is first; an access verdict for `access_ttl`. Concurrent reviews of the same
// token share one request. Reviews are rate-limited (a token bucket): past the limit, and
// whenever the API server cannot answer, the verdict is kUnavailable (the caller answers 503
// with Retry-After; never an allow). Thread-safe; calls block up to `timeout`.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tollgate/auth/identity.h"
#include "tollgate/k8s/transport.h"
#include "tollgate/util/ttl_cache.h"

namespace tollgate::auth {

enum class Outcome : std::uint8_t { kOk, kRefused, kUnavailable };

struct TokenVerdict {
  Outcome outcome = Outcome::kUnavailable;
  // kOk. Shared: a cached verdict is handed to every request that presents the token, and a
  // parked long-poll keeps it, without copying the identity's strings, groups and extras.
  std::shared_ptr<const Identity> identity;
  std::string reason;  // kRefused or kUnavailable: for the 401/503 body; never the token
};

struct AccessVerdict {
  Outcome outcome = Outcome::kUnavailable;  // kOk: allowed; kRefused: denied
  std::string reason;
};

struct ReviewerOptions {
  std::string audience{kAudience};
  std::chrono::seconds token_ttl{120};
  std::chrono::seconds access_ttl{10};
  std::chrono::seconds failure_ttl{5};  // a refused token's verdict is kept this long
  std::size_t capacity = 10000;         // entries per cache
  double reviews_per_second = 50;       // to the API server, both kinds together
  double burst = 100;
  std::chrono::milliseconds timeout{5000};
  std::size_t connections = 4;  // transports kept for concurrent reviews
};

class Reviewer {
 public:
  // `make_transport` opens a connection to the API server (called lazily, up to
  // `options.connections` times).
  using TransportFactory = std::function<util::Result<std::unique_ptr<k8s::Transport>>()>;
  Reviewer(TransportFactory make_transport, ReviewerOptions options = {});

  TokenVerdict review_token(const std::string& token);
  // May `who` list authorizationpolicies.security.istio.io in `ns` ("" = cluster-wide)?
  AccessVerdict may_list_policies(const Identity& who, const std::string& ns);
  // The cached verdicts alone: never a review, never blocking on the API server (nullopt:
  // nothing cached; ask review_token() / may_list_policies() off the request's thread).
  std::optional<TokenVerdict> cached_token(const std::string& token);
  std::optional<AccessVerdict> cached_access(const Identity& who, const std::string& ns);

  struct Stats {
    std::uint64_t token_reviews = 0, access_reviews = 0, cache_hits = 0, coalesced = 0,
                  rate_limited = 0, failures = 0;
  };
  Stats stats() const;

  // The hash a token is cached under (hex SHA-256).
  static std::string token_key(const std::string& token);

 private:
  struct Flight;  // one review in progress, shared by its waiters
  bool take_rate_token();
  util::Result<k8s::ApiResponse> post(const std::string& path, const std::string& body);
  TokenVerdict do_token_review(const std::string& token, const std::string& key);

  TransportFactory make_transport_;
  const ReviewerOptions options_;
  util::TtlCache<TokenVerdict> tokens_;
  util::TtlCache<AccessVerdict> access_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;  // guarded by mu_
  std::vector<std::unique_ptr<k8s::Transport>> idle_;                 // guarded by mu_
  std::size_t opened_ = 0;                                            // guarded by mu_
  double bucket_;                                                     // guarded by mu_
  std::chrono::steady_clock::time_point refilled_;                    // guarded by mu_
  Stats stats_;                                                       // guarded by mu_
};

// The `exp` claim of a JWT (unverified: only to bound how long a verdict is cached), or
// nullopt for a token that is not a JWT or has none.
std::optional<std::chrono::system_clock::time_point> jwt_expiry(const std::string& token);

}  // namespace tollgate::auth
