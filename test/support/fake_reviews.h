// The fake API server's TokenReview and SubjectAccessReview (authentication.k8s.io/v1,
// authorization.k8s.io/v1), answered as kube-apiserver answers them: a token is known or
// not, expired or not, and minted for some audiences (a review that names audiences gets
// their intersection, and is unauthenticated without one); access is allowed by rules
// (user or group, verb, API group, resource, namespace or cluster-wide). Reviews can be told
// to fail (500) or to stall before answering. Thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tollgate::testing {

struct FakeToken {
  std::string username, uid;
  std::vector<std::string> groups;
  nlohmann::json extra = nlohmann::json::object();  // {"key": ["value", ...]}
  std::vector<std::string> audiences = {"https://kubernetes.default.svc.cluster.local"};
  bool expired = false;
};

// Pod-bound token for a pod's service account, as the kubelet's projected volume gets it.
FakeToken pod_token(const std::string& ns, const std::string& service_account,
                    const std::string& pod, const std::string& pod_uid,
                    std::vector<std::string> audiences);

class FakeReviews {
 public:
  void add_token(const std::string& token, FakeToken info);
  // `subject` is a username or a group; ns empty: cluster-wide.
  void allow(const std::string& subject, const std::string& verb, const std::string& api_group,
             const std::string& resource, const std::string& ns);
  // The next `count` reviews answer 500, or stall for `stall` before answering.
  void fail_next(int count);
  void stall_next(int count, std::chrono::milliseconds stall);
  std::size_t token_reviews() const;
  std::size_t access_reviews() const;

  struct Answer {
    int status = 200;
    nlohmann::json body;
    std::chrono::milliseconds stall{0};  // wait this long before answering
  };
  // The answer for a POST to `path`, or nullopt when `path` is not a review.
  std::optional<Answer> answer(const std::string& path, const std::string& body);

 private:
  struct Rule {
    std::string subject, verb, api_group, resource, ns;
  };
  nlohmann::json token_review(const nlohmann::json& spec);
  nlohmann::json access_review(const nlohmann::json& spec);

  mutable std::mutex mu_;
  std::vector<std::pair<std::string, FakeToken>> tokens_;
  std::vector<Rule> rules_;
  int fail_ = 0, stall_count_ = 0;
  std::chrono::milliseconds stall_{0};
  std::size_t token_reviews_ = 0, access_reviews_ = 0;
};

}  // namespace tollgate::testing
