// The real kubectl (/usr/bin/kubectl) against the fake API server: apply, get, describe,
// events, patch, replace and delete of an AuthorizationPolicy with a status subresource, and
// of the Events a controller writes about it. Skipped (with a warning) without kubectl.
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "test/support/fake_apiserver.h"
#include "test/support/http_get.h"
#include "test/support/kubectl.h"

namespace {

using json = nlohmann::json;
using tollgate::testing::FakeApiServer;
using tollgate::testing::FakeApiServerOptions;
using tollgate::testing::KubectlResult;
using Write = FakeApiServer::Write;

constexpr const char* kPolicies = "/apis/security.istio.io/v1/authorizationpolicies";
constexpr const char* kPods = "/api/v1/pods";
constexpr const char* kNamespaces = "/api/v1/namespaces";
constexpr const char* kEvents = "/api/v1/events";

const char* const kPolicy = R"(apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-web
  namespace: ns
spec:
  action: DENY
  rules:
  - to:
    - operation:
        ports: ["9090"]
)";

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "tollgate-kubectl-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path() const { return path_; }

 private:
  std::string path_;
};

struct Cluster {
  explicit Cluster(FakeApiServerOptions options = {}, const std::string& token = "")
      : server(std::move(options)) {
    server.add_collection(kPolicies, "AuthorizationPolicyList", "security.istio.io/v1", true);
    server.set_status_subresource(kPolicies, true);
    server.add_collection(kPods, "PodList", "v1", false);
    server.add_collection(kNamespaces, "NamespaceList", "v1", false);
    server.add_collection(kEvents, "EventList", "v1", false);
    server.upsert(kNamespaces, {{"metadata", {{"name", "ns"}}}});
    kubeconfig = tollgate::testing::write_kubeconfig(server, dir.path(), token);
  }

  KubectlResult run(const std::vector<std::string>& args, const std::string& stdin_text = "") {
    KubectlResult r = tollgate::testing::kubectl(kubeconfig, args, stdin_text);
    UNSCOPED_INFO("kubectl exit " << r.exit_code << "\nstdout:\n" << r.out << "stderr:\n" << r.err);
    return r;
  }

  // POSTs an Event about the policy, as a controller records one.
  void post_event(const std::string& name, const std::string& object, const std::string& uid,
                  const std::string& reason, const std::string& message) {
    const json event = {{"apiVersion", "v1"},
                        {"kind", "Event"},
                        {"metadata", {{"name", name}, {"namespace", "ns"}}},
                        {"involvedObject",
                         {{"kind", "AuthorizationPolicy"},
                          {"apiVersion", "security.istio.io/v1"},
                          {"name", object},
                          {"namespace", "ns"},
                          {"uid", uid}}},
                        {"type", "Warning"},
                        {"reason", reason},
                        {"message", message},
                        {"source", {{"component", "tollgate"}}},
                        {"reportingComponent", "tollgate"},
                        {"firstTimestamp", "2024-01-01T00:00:00Z"},
                        {"lastTimestamp", "2024-01-01T00:00:00Z"},
                        {"count", 1}};
    const auto r =
        tollgate::testing::http_request(server.port(), "POST", "/api/v1/namespaces/ns/events",
                                        "Content-Type: application/json\r\n", event.dump());
    REQUIRE(r);
    REQUIRE(r->status == 201);
  }

  FakeApiServer server;
  TempDir dir;
  std::string kubeconfig;
};

std::size_t count_writes(const FakeApiServer& server, const std::string& method) {
  std::size_t n = 0;
  for (const Write& w : server.writes()) n += w.method == method ? 1 : 0;
  return n;
}

}  // namespace

TEST_CASE("kubectl applies, reads, describes and deletes a policy and its events") {
  if (!tollgate::testing::kubectl_available()) {
    WARN("kubectl is not installed: skipped");
    return;
  }
  Cluster c;

  // apply: a create, then a no-op, then a spec change, then a label change.
  KubectlResult r = c.run({"apply", "-f", "-"}, kPolicy);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "authorizationpolicy.security.istio.io/deny-web created\n");
  json stored = c.server.object(kPolicies, "ns", "deny-web");
  REQUIRE(stored.is_object());
  CHECK(stored["metadata"]["generation"] == 1);
  CHECK(stored["metadata"]["annotations"].contains(
      "kubectl.kubernetes.io/last-applied-configuration"));
  const std::string uid = stored["metadata"]["uid"];
  const std::string created_rv = stored["metadata"]["resourceVersion"];

  r = c.run({"apply", "-f", "-"}, kPolicy);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "authorizationpolicy.security.istio.io/deny-web unchanged\n");
  CHECK(c.server.object(kPolicies, "ns", "deny-web")["metadata"]["resourceVersion"] == created_rv);
  CHECK(count_writes(c.server, "PATCH") == 0);

  r = c.run({"apply", "-f", "-"}, replaced(kPolicy, "DENY", "AUDIT"));
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "authorizationpolicy.security.istio.io/deny-web configured\n");
  stored = c.server.object(kPolicies, "ns", "deny-web");
  CHECK(stored["spec"]["action"] == "AUDIT");
  CHECK(stored["metadata"]["generation"] == 2);
  const Write patch = c.server.writes().back();
  CHECK(patch.method == "PATCH");
  CHECK(patch.content_type == "application/merge-patch+json");  // a custom resource
  CHECK(patch.status == 200);

  r = c.run({"apply", "-f", "-"}, replaced(replaced(kPolicy, "DENY", "AUDIT"), "  namespace: ns\n",
                                           "  namespace: ns\n  labels:\n    app: web\n"));
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "authorizationpolicy.security.istio.io/deny-web configured\n");
  stored = c.server.object(kPolicies, "ns", "deny-web");
  CHECK(stored["metadata"]["labels"]["app"] == "web");
  CHECK(stored["metadata"]["generation"] == 2);  // metadata is not spec

  // The status, written through .../status, shows; kubectl's own write of it is ignored.
  r = c.run(
      {"patch", "authorizationpolicy", "deny-web", "-n", "ns", "--subresource=status",
       "--type=merge", "-p",
       R"({"status":{"conditions":[{"type":"Accepted","status":"True","reason":"Compiled"}]}})"});
  REQUIRE(r.exit_code == 0);
  CHECK(c.server.writes().back().subresource == "status");
  r = c.run({"patch", "ap", "deny-web", "-n", "ns", "--type=merge", "-p",
             R"({"status":{"conditions":[]}})"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "authorizationpolicy.security.istio.io/deny-web patched (no change)\n");

  r = c.run({"get", "authorizationpolicies", "-A"});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::StartsWith("NAMESPACE   NAME       AGE\nns          deny-web   "));

  r = c.run({"get", "ap", "-n", "ns", "deny-web", "-o", "yaml"});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("kind: AuthorizationPolicy"));
  CHECK_THAT(r.out, Catch::Contains("  generation: 2\n"));
  CHECK_THAT(r.out, Catch::Contains("  uid: " + uid + "\n"));
  CHECK_THAT(r.out, Catch::Contains("status:\n  conditions:\n  - reason: Compiled\n"));
  CHECK_THAT(r.out, Catch::Contains("    type: Accepted\n"));

  r = c.run({"get", "ap", "-n", "ns", "-l", "app=web", "-o", "name"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "authorizationpolicy.security.istio.io/deny-web\n");
  r = c.run({"get", "ap", "-A", "-l", "app=db", "-o", "name"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.empty());

  // Events about it, and one about another policy that must not show.
  c.post_event("deny-web.1", "deny-web", uid, "Rejected", "rule 0 names an unknown port");
  c.post_event("other.1", "other", "uid-other", "Compiled", "about another policy");

  r = c.run({"describe", "authorizationpolicy", "deny-web", "-n", "ns"});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::StartsWith("Name:         deny-web\nNamespace:    ns\n"));
  CHECK_THAT(r.out, Catch::Contains("Events:\n  Type     Reason    Age"));
  CHECK_THAT(r.out, Catch::Contains("  Warning  Rejected  "));
  CHECK_THAT(r.out, Catch::Contains("tollgate  rule 0 names an unknown port\n"));
  CHECK_THAT(r.out, !Catch::Contains("about another policy"));

  r = c.run({"events", "-n", "ns", "--for", "authorizationpolicy/deny-web"});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::StartsWith("LAST SEEN   TYPE      REASON     OBJECT"));
  CHECK_THAT(r.out, Catch::Contains("Warning   Rejected   AuthorizationPolicy/deny-web   rule 0 "
                                    "names an unknown port\n"));
  CHECK_THAT(r.out, !Catch::Contains("about another policy"));

  r = c.run({"get", "events", "-n", "ns", "--field-selector", "reason=Compiled", "-o", "name"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "event/other.1\n");

  r = c.run({"delete", "authorizationpolicy", "deny-web", "-n", "ns"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "authorizationpolicy.security.istio.io \"deny-web\" deleted\n");
  CHECK(c.server.object(kPolicies, "ns", "deny-web").is_null());
  CHECK(count_writes(c.server, "DELETE") == 1);

  r = c.run({"get", "ap", "-n", "ns", "deny-web"});
  CHECK(r.exit_code == 1);
  CHECK(r.err ==
        "Error from server (NotFound): authorizationpolicies.security.istio.io "
        "\"deny-web\" not found\n");
}

TEST_CASE("kubectl patch, replace and create meet the apiserver's preconditions") {
  if (!tollgate::testing::kubectl_available()) {
    WARN("kubectl is not installed: skipped");
    return;
  }
  Cluster c;
  REQUIRE(c.run({"create", "-f", "-"}, kPolicy).exit_code == 0);
  KubectlResult r = c.run({"create", "-f", "-"}, kPolicy);
  CHECK(r.exit_code == 1);
  CHECK(r.err ==
        "Error from server (AlreadyExists): error when creating \"STDIN\": "
        "authorizationpolicies.security.istio.io \"deny-web\" already exists\n");

  r = c.run({"patch", "ap", "deny-web", "-n", "ns", "--type=json", "-p",
             R"([{"op":"replace","path":"/spec/action","value":"ALLOW"}])"});
  REQUIRE(r.exit_code == 0);
  CHECK(c.server.object(kPolicies, "ns", "deny-web")["spec"]["action"] == "ALLOW");

  // replace with a resourceVersion that someone else's write made stale.
  r = c.run({"get", "ap", "deny-web", "-n", "ns", "-o", "json"});
  REQUIRE(r.exit_code == 0);
  json object = json::parse(r.out);
  c.server.upsert(kPolicies, c.server.object(kPolicies, "ns", "deny-web"));
  object["spec"]["action"] = "AUDIT";
  r = c.run({"replace", "-f", "-"}, object.dump());
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("Error from server (Conflict)"));
  CHECK_THAT(r.err, Catch::Contains("the object has been modified; please apply your changes to "
                                    "the latest version and try again"));
  object["metadata"].erase("resourceVersion");
  r = c.run({"replace", "-f", "-"}, object.dump());
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "authorizationpolicy.security.istio.io/deny-web replaced\n");
  CHECK(c.server.object(kPolicies, "ns", "deny-web")["metadata"]["generation"] == 3);
}

TEST_CASE("kubectl reaches a TLS fake API server with a bearer token") {
  if (!tollgate::testing::kubectl_available()) {
    WARN("kubectl is not installed: skipped");
    return;
  }
  FakeApiServerOptions options;
  options.tls = true;
  options.bearer_token = "kubectl-token";
  Cluster c(options, "kubectl-token");
  REQUIRE(c.run({"apply", "-f", "-"}, kPolicy).exit_code == 0);
  for (const Write& w : c.server.writes()) CHECK(w.authorization == "Bearer kubectl-token");
  KubectlResult r = c.run({"get", "namespaces", "-o", "name"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "namespace/ns\n");

  c.server.set_bearer_token("rotated");
  r = c.run({"get", "ap", "-A"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("Unauthorized"));
}

TEST_CASE("kubectl wait watches with a field selector until the status says so") {
  if (!tollgate::testing::kubectl_available()) {
    WARN("kubectl is not installed: skipped");
    return;
  }
  Cluster c;
  REQUIRE(c.run({"apply", "-f", "-"}, kPolicy).exit_code == 0);
  KubectlResult waited;
  std::thread waiter([&] {
    waited = tollgate::testing::kubectl(
        c.kubeconfig, {"wait", "--for=condition=Accepted", "authorizationpolicy/deny-web", "-n",
                       "ns", "--timeout=60s"});
  });
  const bool watching = c.server.wait_for_watches(kPolicies, 1, 60);
  CHECK(watching);
  json object = c.server.object(kPolicies, "ns", "deny-web");
  object["status"] = {{"conditions", {{{"type", "Accepted"}, {"status", "True"}}}}};
  c.server.upsert(kPolicies, object);
  waiter.join();
  INFO("stdout:\n" << waited.out << "stderr:\n" << waited.err);
  CHECK(waited.exit_code == 0);
  CHECK(waited.out == "authorizationpolicy.security.istio.io/deny-web condition met\n");
  bool selected = false;
  for (const auto& req : c.server.requests()) {
    if (req.target.find("watch=true") != std::string::npos &&
        req.target.find("fieldSelector=metadata.name%3Ddeny-web") != std::string::npos) {
      selected = true;
    }
  }
  CHECK(selected);

  // A kubectl that does not end by itself is killed at the helper's timeout.
  const KubectlResult killed = tollgate::testing::kubectl(
      c.kubeconfig, {"get", "ap", "-A", "--watch"}, "", std::chrono::milliseconds(1500));
  CHECK(killed.exit_code == -1);
  CHECK_THAT(killed.err, Catch::Contains("[kubectl killed after 1500 ms]"));
}
