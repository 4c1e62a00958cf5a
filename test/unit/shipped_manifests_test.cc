// The YAML the project ships (crds/, manifests/, examples/) parses, and the controller's RBAC
// grants exactly what its watchers need.
#include <catch2/catch.hpp>

#include "support/run.h"
#include "tollgate/policy/parse.h"

namespace tollgate {
namespace {

std::vector<policy::Document> docs_of(const std::string& rel) {
  auto d = policy::parse_documents(testing::read_file(testing::source_path(rel)), rel);
  INFO(rel << ": " << (d.ok() ? "" : d.error().message));
  REQUIRE(d.ok());
  return *d;
}

const nlohmann::json* find_kind(const std::vector<policy::Document>& docs,
                                const std::string& kind) {
  for (const auto& d : docs) {
    if (d.object.value("kind", "") == kind) return &d.object;
  }
  return nullptr;
}

TEST_CASE("The controller's ClusterRole lets every watcher list and watch its kind") {
  const auto docs = docs_of("manifests/tollgate.yaml");
  const auto* role = find_kind(docs, "ClusterRole");
  REQUIRE(role != nullptr);
  auto allowed = [&](const std::string& group, const std::string& resource) {
    for (const auto& rule : (*role)["rules"]) {
      const auto& groups = rule["apiGroups"];
      const auto& resources = rule["resources"];
      const auto& verbs = rule["verbs"];
      auto has = [](const nlohmann::json& a, const std::string& v) {
        return std::find(a.begin(), a.end(), v) != a.end();
      };
      if (has(groups, group) && has(resources, resource) && has(verbs, "list") &&
          has(verbs, "watch")) {
        return true;
      }
    }
    return false;
  };
  CHECK(allowed("", "pods"));
  CHECK(allowed("", "serviceaccounts"));
  CHECK(allowed("", "namespaces"));
  CHECK(allowed("security.istio.io", "authorizationpolicies"));
  CHECK_FALSE(allowed("", "secrets"));
  const auto* deploy = find_kind(docs, "Deployment");
  REQUIRE(deploy != nullptr);
  const auto& pod = (*deploy)["spec"]["template"]["spec"];
  CHECK(pod["serviceAccountName"] == "tollgate");
  CHECK(pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz");
}

TEST_CASE("The shipped CRD serves AuthorizationPolicy v1 and v1beta1") {
  const auto docs = docs_of("crds/authorizationpolicies.security.istio.io.yaml");
  REQUIRE(docs.size() == 1);
  const auto& spec = docs[0].object["spec"];
  CHECK(spec["group"] == "security.istio.io");
  CHECK(spec["names"]["kind"] == "AuthorizationPolicy");
  std::vector<std::string> served;
  for (const auto& v : spec["versions"]) {
    if (v["served"] == true) served.push_back(v["name"]);
  }
  CHECK(served == std::vector<std::string>{"v1", "v1beta1"});
}

}  // namespace
}  // namespace tollgate
