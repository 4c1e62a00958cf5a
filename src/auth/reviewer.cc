#include "tollgate/auth/reviewer.h"

#include <openssl/sha.h>

#include <algorithm>
#include <cstdio>

#include "tollgate/util/base64.h"

namespace tollgate::auth {
namespace {

using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kTokenReviews = "/apis/authentication.k8s.io/v1/tokenreviews";
constexpr const char* kAccessReviews = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
constexpr std::size_t kMaxReviewBytes = std::size_t{1} << 20;

std::string access_key(const Identity& who, const std::string& ns) {
  std::string key = who.username + '\n' + ns;
  for (const auto& g : who.groups) key += '\n' + g;
  return key;
}

}  // namespace

struct Reviewer::Flight {
  bool done = false;
  TokenVerdict verdict;
};

std::string Reviewer::token_key(const std::string& token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
  std::string hex;
  hex.reserve(2 * sizeof digest);
  for (const unsigned char b : digest) {
    char buf[3];
    std::snprintf(buf, sizeof buf, "%02x", b);
    hex += buf;
  }
  return hex;
}

std::optional<std::chrono::system_clock::time_point> jwt_expiry(const std::string& token) {
  const auto a = token.find('.');
  const auto b = a == std::string::npos ? a : token.find('.', a + 1);
  if (b == std::string::npos) return std::nullopt;
  std::string payload = token.substr(a + 1, b - a - 1);
  std::replace(payload.begin(), payload.end(), '-', '+');
  std::replace(payload.begin(), payload.end(), '_', '/');
  while (payload.size() % 4 != 0) payload += '=';
  auto bytes = util::decode_base64(payload);
  if (!bytes.ok()) return std::nullopt;
  const json claims = json::parse(*bytes, nullptr, false);
  if (!claims.is_object()) return std::nullopt;
  auto exp = claims.find("exp");
  if (exp == claims.end() || !exp->is_number()) return std::nullopt;
  return std::chrono::system_clock::time_point(
      std::chrono::seconds(static_cast<std::int64_t>(exp->get<double>())));
}

Reviewer::Reviewer(TransportFactory make_transport, ReviewerOptions options)
    : make_transport_(std::move(make_transport)),
      options_(std::move(options)),
      tokens_(options_.capacity),
      access_(options_.capacity),
      bucket_(options_.burst),
      refilled_(SteadyClock::now()) {}

Reviewer::Stats Reviewer::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

bool Reviewer::take_rate_token() {
  // Called with mu_ held.
  const auto now = SteadyClock::now();
  bucket_ =
      std::min(options_.burst, bucket_ + std::chrono::duration<double>(now - refilled_).count() *
                                             options_.reviews_per_second);
  refilled_ = now;
  if (bucket_ < 1.0) {
    ++stats_.rate_limited;
    return false;
  }
  bucket_ -= 1.0;
  return true;
}

util::Result<k8s::ApiResponse> Reviewer::post(const std::string& path, const std::string& body) {
  std::unique_ptr<k8s::Transport> t;
  {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, options_.timeout,
                 [&] { return !idle_.empty() || opened_ < options_.connections; });
    if (!idle_.empty()) {
      t = std::move(idle_.back());
      idle_.pop_back();
    } else if (opened_ < options_.connections) {
      ++opened_;
    } else {
      return util::make_error("every connection to the API server is busy");
    }
  }
  if (!t) {
    auto made = make_transport_();
    if (!made.ok()) {
      std::lock_guard lock(mu_);
      --opened_;
      cv_.notify_one();
      return made.error();
    }
    t = std::move(*made);
  }
  k8s::Call call;
  call.method = "POST";
  call.target = path;
  call.body = body;
  call.timeout = options_.timeout;
  call.max_body = kMaxReviewBytes;
  auto r = t->send(call);
  {
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(t));
  }
  cv_.notify_one();
  return r;
}

TokenVerdict Reviewer::do_token_review(const std::string& token, const std::string& key) {
  auto r = post(kTokenReviews, token_review_request(token, options_.audience).dump());
  TokenVerdict v;
  if (!r.ok()) {
    v.reason = "the API server cannot review the token now: " + r.error().message;
    return v;
  }
  if (r->status != 200 && r->status != 201) {
    v.reason = "the API server cannot review the token now: " + k8s::api_error(*r);
    return v;
  }
  const json review = json::parse(r->body, nullptr, false);
  auto id = identity_from_token_review(review, options_.audience);
  const auto now = SteadyClock::now();
  if (!id.ok()) {
    v.outcome = Outcome::kRefused;
    v.reason = id.error().message;
    tokens_.put(key, v, now + options_.failure_ttl);
    return v;
  }
  v.outcome = Outcome::kOk;
  v.identity = std::make_shared<const Identity>(std::move(*id));
  auto until = now + options_.token_ttl;
  if (auto exp = jwt_expiry(token)) {
    const auto left = *exp - std::chrono::system_clock::now();
    until = std::min(until, now + std::chrono::duration_cast<SteadyClock::duration>(left));
  }
  if (until > now) tokens_.put(key, v, until);
  return v;
}

TokenVerdict Reviewer::review_token(const std::string& token) {
  if (token.empty()) return {Outcome::kRefused, {}, "no bearer token"};
  const std::string key = token_key(token);
  if (auto cached = tokens_.get(key)) {
    std::lock_guard lock(mu_);
    ++stats_.cache_hits;
    return *cached;
  }
  std::shared_ptr<Flight> flight;
  {
    std::unique_lock lock(mu_);
    auto it = flights_.find(key);
    if (it != flights_.end()) {
      flight = it->second;
      ++stats_.coalesced;
      cv_.wait_for(lock, options_.timeout + std::chrono::seconds(1), [&] { return flight->done; });
      if (!flight->done) return {Outcome::kUnavailable, {}, "the token review timed out"};
      return flight->verdict;
    }
    if (!take_rate_token()) {
      return {Outcome::kUnavailable, {}, "too many token reviews; retry shortly"};
    }
    flight = std::make_shared<Flight>();
    flights_.emplace(key, flight);
    ++stats_.token_reviews;
  }
  TokenVerdict v = do_token_review(token, key);
  {
    std::lock_guard lock(mu_);
    if (v.outcome == Outcome::kUnavailable) ++stats_.failures;
    flight->verdict = v;
    flight->done = true;
    flights_.erase(key);
  }
  cv_.notify_all();
  return v;
}

std::optional<TokenVerdict> Reviewer::cached_token(const std::string& token) {
  if (token.empty()) return TokenVerdict{Outcome::kRefused, {}, "no bearer token"};
  auto cached = tokens_.get(token_key(token));
  if (cached) {
    std::lock_guard lock(mu_);
    ++stats_.cache_hits;
  }
  return cached;
}

std::optional<AccessVerdict> Reviewer::cached_access(const Identity& who, const std::string& ns) {
  auto cached = access_.get(access_key(who, ns));
  if (cached) {
    std::lock_guard lock(mu_);
    ++stats_.cache_hits;
  }
  return cached;
}

AccessVerdict Reviewer::may_list_policies(const Identity& who, const std::string& ns) {
  const std::string key = access_key(who, ns);
  if (auto cached = access_.get(key)) {
    std::lock_guard lock(mu_);
    ++stats_.cache_hits;
    return *cached;
  }
  {
    std::lock_guard lock(mu_);
    if (!take_rate_token())
      return {Outcome::kUnavailable, "too many access reviews; retry shortly"};
    ++stats_.access_reviews;
  }
  json attrs = {
      {"verb", "list"}, {"group", "security.istio.io"}, {"resource", "authorizationpolicies"}};
  if (!ns.empty()) attrs["namespace"] = ns;
  json spec = {{"user", who.username}, {"groups", who.groups}, {"resourceAttributes", attrs}};
  if (!who.uid.empty()) spec["uid"] = who.uid;
  if (!who.extra.empty()) spec["extra"] = who.extra;
  const json review = {
      {"apiVersion", "authorization.k8s.io/v1"}, {"kind", "SubjectAccessReview"}, {"spec", spec}};
  auto r = post(kAccessReviews, review.dump());
  AccessVerdict v;
  if (!r.ok() || (r->status != 200 && r->status != 201)) {
    std::lock_guard lock(mu_);
    ++stats_.failures;
    v.reason = "the API server cannot review access now: " + k8s::describe(r);
    return v;
  }
  const json answer = json::parse(r->body, nullptr, false);
  const json status = answer.is_object() ? answer.value("status", json::object()) : json::object();
  // Only a literal `allowed: true` allows, and a literal `denied: true` refuses whatever else
  // the answer says; a wrong-typed field is no permission (and no exception).
  const auto flag = [&status](const char* name) {
    auto f = status.find(name);
    return f != status.end() && f->is_boolean() && f->get<bool>();
  };
  const bool allowed = status.is_object() && flag("allowed") && !flag("denied");
  v.outcome = allowed ? Outcome::kOk : Outcome::kRefused;
  if (!allowed) {
    v.reason = who.username + " may not list authorizationpolicies.security.istio.io" +
               (ns.empty() ? " cluster-wide" : " in namespace " + ns);
  }
  access_.put(key, v, SteadyClock::now() + options_.access_ttl);
  return v;
}

}  // namespace tollgate::auth
