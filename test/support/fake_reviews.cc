#include "support/fake_reviews.h"

#include <algorithm>

namespace tollgate::testing {

using nlohmann::json;

namespace {

constexpr const char* kTokenReviews = "/apis/authentication.k8s.io/v1/tokenreviews";
constexpr const char* kAccessReviews = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

json status_failure(int code, const std::string& reason, const std::string& message) {
  return {{"kind", "Status"}, {"apiVersion", "v1"}, {"status", "Failure"},
          {"reason", reason}, {"message", message}, {"code", code}};
}

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

FakeToken pod_token(const std::string& ns, const std::string& service_account,
                    const std::string& pod, const std::string& pod_uid,
                    std::vector<std::string> audiences) {
  FakeToken t;
  t.username = "system:serviceaccount:" + ns + ":" + service_account;
  t.uid = "sa-uid-" + service_account;
  t.groups = {"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"};
  t.extra = {{"authentication.kubernetes.io/pod-name", {pod}},
             {"authentication.kubernetes.io/pod-uid", {pod_uid}}};
  t.audiences = std::move(audiences);
  return t;
}

void FakeReviews::add_token(const std::string& token, FakeToken info) {
  std::lock_guard lock(mu_);
  tokens_.emplace_back(token, std::move(info));
}

void FakeReviews::allow(const std::string& subject, const std::string& verb,
                        const std::string& api_group, const std::string& resource,
                        const std::string& ns) {
  std::lock_guard lock(mu_);
  rules_.push_back({subject, verb, api_group, resource, ns});
}

void FakeReviews::fail_next(int count) {
  std::lock_guard lock(mu_);
  fail_ = count;
}

void FakeReviews::stall_next(int count, std::chrono::milliseconds stall) {
  std::lock_guard lock(mu_);
  stall_count_ = count;
  stall_ = stall;
}

std::size_t FakeReviews::token_reviews() const {
  std::lock_guard lock(mu_);
  return token_reviews_;
}

std::size_t FakeReviews::access_reviews() const {
  std::lock_guard lock(mu_);
  return access_reviews_;
}

json FakeReviews::token_review(const json& spec) {
  const std::string token = str(spec, "token");
  json status = {{"user", json::object()}};
  auto it = std::find_if(tokens_.begin(), tokens_.end(),
                         [&](const auto& t) { return !token.empty() && t.first == token; });
  if (it == tokens_.end()) {
    status["error"] =
        "[invalid bearer token, square/go-jose: compact JWS format must have three "
        "parts]";
    return status;
  }
  const FakeToken& t = it->second;
  if (t.expired) {
    status["error"] = "[invalid bearer token, service account token has expired]";
    return status;
  }
  std::vector<std::string> audiences = t.audiences;
  if (auto want = spec.find("audiences");
      want != spec.end() && want->is_array() && !want->empty()) {
    std::vector<std::string> both;
    for (const auto& a : *want) {
      if (a.is_string() &&
          std::find(t.audiences.begin(), t.audiences.end(), a) != t.audiences.end()) {
        both.push_back(a.get<std::string>());
      }
    }
    if (both.empty()) {
      status["error"] =
          "[invalid bearer token, token audiences [...] is invalid for the target "
          "audiences " +
          want->dump() + "]";
      return status;
    }
    audiences = both;
  }
  status["authenticated"] = true;
  status["audiences"] = audiences;
  status["user"] = {
      {"username", t.username}, {"uid", t.uid}, {"groups", t.groups}, {"extra", t.extra}};
  return status;
}

json FakeReviews::access_review(const json& spec) {
  const std::string user = str(spec, "user");
  std::vector<std::string> subjects = {user};
  if (auto g = spec.find("groups"); g != spec.end() && g->is_array()) {
    for (const auto& x : *g) {
      if (x.is_string()) subjects.push_back(x.get<std::string>());
    }
  }
  const json attrs = spec.value("resourceAttributes", json::object());
  const std::string verb = str(attrs, "verb"), group = str(attrs, "group"),
                    resource = str(attrs, "resource"), ns = str(attrs, "namespace");
  for (const Rule& r : rules_) {
    const bool subject_ok =
        std::find(subjects.begin(), subjects.end(), r.subject) != subjects.end();
    if (subject_ok && r.verb == verb && r.api_group == group && r.resource == resource &&
        (r.ns.empty() || r.ns == ns)) {
      return {{"allowed", true}, {"reason", "allowed by the fake's rule for " + r.subject}};
    }
  }
  return {{"allowed", false}, {"reason", ""}};
}

std::optional<FakeReviews::Answer> FakeReviews::answer(const std::string& path,
                                                       const std::string& body) {
  const bool tokens = path == kTokenReviews;
  if (!tokens && path != kAccessReviews) return std::nullopt;
  std::lock_guard lock(mu_);
  Answer a;
  if (stall_count_ > 0) {
    --stall_count_;
    a.stall = stall_;
  }
  if (fail_ > 0) {
    --fail_;
    a.status = 500;
    a.body = status_failure(500, "InternalError", "injected by the fake apiserver");
    return a;
  }
  json review = json::parse(body, nullptr, false);
  const char* kind = tokens ? "TokenReview" : "SubjectAccessReview";
  if (!review.is_object() || str(review, "kind") != kind || !review.contains("spec") ||
      !review["spec"].is_object()) {
    a.status = 400;
    a.body = status_failure(400, "BadRequest", std::string("the body is not a ") + kind);
    return a;
  }
  if (tokens) {
    ++token_reviews_;
    review["status"] = token_review(review["spec"]);
  } else {
    ++access_reviews_;
    review["status"] = access_review(review["spec"]);
  }
  review["metadata"] = {{"creationTimestamp", nullptr}};
  a.status = 201;
  a.body = std::move(review);
  return a;
}

}  // namespace tollgate::testing
