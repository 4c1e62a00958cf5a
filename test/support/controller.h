// `tollgate run` replicas against the fake API server, for the tests of what the controller
// writes (status, Events, the Lease): the cluster's collections, a kubeconfig per replica
// (each with its own bearer token, so the request log tells them apart), the replica as a
// child process with its port and metrics, and the write log read per policy.
#pragma once

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/child.h"
#include "support/deadlines.h"
#include "support/fake_apiserver.h"
#include "support/http_get.h"
#include "support/run.h"

namespace tollgate::testing {

inline constexpr const char* kPolicies = "/apis/security.istio.io/v1/authorizationpolicies";
inline constexpr const char* kPods = "/api/v1/pods";
inline constexpr const char* kEvents = "/api/v1/events";
inline constexpr const char* kLeases = "/apis/coordination.k8s.io/v1/leases";
inline constexpr const char* kLeaseNamespace = "tollgate-system";

// The collections tollgate watches and writes, registered on `api`.
inline void add_cluster_collections(FakeApiServer& api) {
  api.add_collection(kPods, "PodList", "v1", false);
  api.add_collection("/api/v1/serviceaccounts", "ServiceAccountList", "v1", false);
  api.add_collection("/api/v1/namespaces", "NamespaceList", "v1", false);
  api.add_collection(kPolicies, "AuthorizationPolicyList", "security.istio.io/v1", true);
  api.set_status_subresource(kPolicies, true);
  api.add_collection(kEvents, "EventList", "v1", false);
  api.add_collection(kLeases, "LeaseList", "coordination.k8s.io/v1", false);
  api.upsert("/api/v1/namespaces", nlohmann::json{{"metadata", {{"name", "default"}}}});
}

inline nlohmann::json allow_policy(const std::string& name, const std::string& app = "backend") {
  return {{"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec",
           {{"selector", {{"matchLabels", {{"app", app}}}}},
            {"rules",
             nlohmann::json::array(
                 {{{"from",
                    nlohmann::json::array(
                        {{{"source",
                           {{"principals", nlohmann::json::array(
                                               {"cluster.local/ns/default/sa/fe"})}}}}})}}})}}}};
}

inline nlohmann::json pod(const std::string& name, const std::string& app = "backend") {
  return {{"metadata",
           {{"name", name},
            {"namespace", "default"},
            {"uid", "uid-" + name},
            {"labels", {{"app", app}}}}},
          {"spec", {{"serviceAccountName", app}, {"containers", nlohmann::json::array()}}},
          {"status", {{"phase", "Running"}, {"podIP", "10.0.0.9"}}}};
}

// One `tollgate run` replica named `identity`, with its own token in its kubeconfig.
class Replica {
 public:
  Replica(FakeApiServer& api, const TempDir& dir, std::string identity)
      : api_(api), dir_(dir), identity_(std::move(identity)) {}

  // Starts it with the election timings (seconds) and extra flags; false if it does not
  // listen within the deadline.
  bool start(const std::vector<std::string>& extra = {}, double lease = 3, double renew = 2,
             double retry = 0.5) {
    const auto kubeconfig = dir_.path() / (identity_ + ".kubeconfig");
    write_file(kubeconfig,
               "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
               "clusters:\n- name: fake\n  cluster:\n    server: " +
                   api_.url() + "\nusers:\n- name: me\n  user: {token: " + token() +
                   "}\ncontexts:\n- name: fake\n  context: {cluster: fake, user: "
                   "me}\n");
    const auto port_file = dir_.path() / (identity_ + ".port");
    std::filesystem::remove(port_file);
    std::vector<std::string> args = {"run",
                                     "--kubeconfig",
                                     kubeconfig.string(),
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--port-file",
                                     port_file.string(),
                                     "--auth",
                                     "none",
                                     "--identity",
                                     identity_,
                                     "--lease-namespace",
                                     kLeaseNamespace,
                                     "--lease-duration",
                                     std::to_string(lease),
                                     "--renew-deadline",
                                     std::to_string(renew),
                                     "--retry-period",
                                     std::to_string(retry)};
    args.insert(args.end(), extra.begin(), extra.end());
    child_ = std::make_unique<Child>();
    if (!child_->spawn(TOLLGATE_BINARY, args, (dir_.path() / (identity_ + ".log")).string())) {
      return false;
    }
    port_ = Child::wait_for_port(port_file.string(), deadline(std::chrono::seconds(30)));
    return port_ != 0;
  }
  int stop(int sig = SIGTERM) { return child_ ? child_->stop(sig) : -1; }

  std::string token() const { return "tok-" + identity_; }
  std::string authorization() const { return "Bearer " + token(); }
  const std::string& identity() const { return identity_; }
  std::uint16_t port() const { return port_; }
  std::string log() const { return child_ ? child_->log() : std::string(); }

  // One metric's value from /metrics (the exact series name, labels included).
  std::optional<double> metric(const std::string& series) const {
    auto r = http_get(port_, "/metrics");
    if (!r || r->status != 200) return std::nullopt;
    const std::string needle = "\n" + series + " ";
    const auto at = r->body.find(needle);
    if (at == std::string::npos) return std::nullopt;
    return std::stod(r->body.substr(at + needle.size()));
  }
  bool leading() const { return metric("tollgate_leader").value_or(0) == 1; }

 private:
  FakeApiServer& api_;
  const TempDir& dir_;
  std::string identity_;
  std::unique_ptr<Child> child_;
  std::uint16_t port_ = 0;
};

// The writes to one policy's /status, in order.
inline std::vector<FakeApiServer::Write> status_writes(const std::vector<FakeApiServer::Write>& all,
                                                       const std::string& name) {
  std::vector<FakeApiServer::Write> out;
  for (const auto& w : all) {
    if (w.path == kPolicies && w.name == name && w.subresource == "status") out.push_back(w);
  }
  return out;
}

inline std::size_t status_writes(const FakeApiServer& api, const std::string& name) {
  return status_writes(api.writes(), name).size();
}

// Waits until `name` has had `n` status writes answered 200.
inline bool wait_for_status_writes(const FakeApiServer& api, const std::string& name, std::size_t n,
                                   std::chrono::seconds timeout) {
  return api.wait_for_writes(
      [&](const std::vector<FakeApiServer::Write>& all) {
        std::size_t ok = 0;
        for (const auto& w : status_writes(all, name)) ok += w.status == 200 ? 1 : 0;
        return ok >= n;
      },
      std::chrono::duration<double>(timeout).count());
}

// Our conditions on the stored policy, by type.
inline std::map<std::string, nlohmann::json> conditions_of(const FakeApiServer& api,
                                                           const std::string& name) {
  std::map<std::string, nlohmann::json> out;
  const auto o = api.object(kPolicies, "default", name);
  if (!o.is_object() || !o.contains("status")) return out;
  for (const auto& c : o["status"].value("conditions", nlohmann::json::array())) {
    out[c.value("type", "")] = c;
  }
  return out;
}

// How long a timed scenario runs: $`name` seconds when set, else `release` in the Release
// build and `sanitized` under the sanitizers (the same code, for less of CI's time).
inline std::chrono::seconds scenario_seconds(const char* name, int release, int sanitized) {
  const char* env = std::getenv(name);
  return std::chrono::seconds(env != nullptr    ? std::atoi(env)
                              : kTimeScale == 1 ? release
                                                : sanitized);
}

// The Lease's spec, or null.
inline nlohmann::json lease_spec(const FakeApiServer& api) {
  const auto o = api.object(kLeases, kLeaseNamespace, "tollgate");
  return o.is_object() ? o.value("spec", nlohmann::json()) : nlohmann::json();
}

}  // namespace tollgate::testing
