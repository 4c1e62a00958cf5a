// The YAML the project ships (manifests/, crds/) parses with tollgate's own reader, and the
// controller's RBAC, read from the files as written, grants exactly
// test/fixtures/rbac-uses.txt. test/manifests_test.sh checks the same and more on what
// `kubectl kustomize` renders; this test needs no kubectl.
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

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

// The file's one object, of kind `kind` (a copy: callers pass docs_of()'s temporary).
nlohmann::json only(const std::vector<policy::Document>& docs, const std::string& kind) {
  REQUIRE(docs.size() == 1);
  REQUIRE(docs[0].object.value("kind", "") == kind);
  return docs[0].object;
}

// (verb, group, resource, scope), as test/fixtures/rbac-uses.txt writes them.
using Grant = std::tuple<std::string, std::string, std::string, std::string>;

std::set<Grant> fixture_grants() {
  std::istringstream in(testing::read_file(testing::source_path("test/fixtures/rbac-uses.txt")));
  std::set<Grant> out;
  for (std::string line; std::getline(in, line);) {
    line = line.substr(0, line.find('#'));
    std::istringstream row(line);
    std::string verb, group, resource, scope;
    if (!(row >> verb >> group >> resource >> scope)) continue;
    out.emplace(verb, group == "core" ? "" : group, resource, scope);
  }
  return out;
}

// A ClusterRole's rules are "cluster" grants; a Role's are "lease" grants, "lease:NAME" for
// each resourceName.
void add_grants(const nlohmann::json& role, bool cluster, std::set<Grant>& out) {
  for (const auto& rule : role["rules"]) {
    std::vector<std::string> scopes;
    for (const auto& n : rule.value("resourceNames", nlohmann::json::array())) {
      scopes.push_back("lease:" + n.get<std::string>());
    }
    if (cluster) {
      CHECK(scopes.empty());
      scopes = {"cluster"};
    } else if (scopes.empty()) {
      scopes = {"lease"};
    }
    for (const auto& g : rule["apiGroups"]) {
      for (const auto& r : rule["resources"]) {
        for (const auto& v : rule["verbs"]) {
          for (const auto& s : scopes) {
            out.emplace(v.get<std::string>(), g.get<std::string>(), r.get<std::string>(), s);
          }
        }
      }
    }
  }
}

TEST_CASE("Every YAML file under manifests/ parses") {
  namespace fs = std::filesystem;
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(testing::source_path("manifests"))) {
    if (e.path().extension() != ".yaml") continue;
    const auto rel = fs::relative(e.path(), testing::source_path("")).string();
    CHECK_FALSE(docs_of(rel).empty());
    ++files;
  }
  CHECK(files >= 12);  // the kustomization and its 9 files, the component's 2
}

TEST_CASE("The ClusterRole and the Role grant exactly what the controller requests") {
  std::set<Grant> granted;
  add_grants(only(docs_of("manifests/clusterrole.yaml"), "ClusterRole"), true, granted);
  const auto role = only(docs_of("manifests/role.yaml"), "Role");
  add_grants(role, false, granted);
  CHECK(granted == fixture_grants());
  CHECK(granted.count({"get", "", "secrets", "cluster"}) == 0);

  // Both bound to the Deployment's ServiceAccount, the Role in its namespace.
  const auto deploy = only(docs_of("manifests/deployment.yaml"), "Deployment");
  const nlohmann::json subject = {
      {"kind", "ServiceAccount"},
      {"name", deploy["spec"]["template"]["spec"]["serviceAccountName"]},
      {"namespace", deploy["metadata"]["namespace"]}};
  const auto crb = only(docs_of("manifests/clusterrolebinding.yaml"), "ClusterRoleBinding");
  CHECK(crb["subjects"] == nlohmann::json::array({subject}));
  CHECK(crb["roleRef"]["name"] == "tollgate");
  const auto rb = only(docs_of("manifests/rolebinding.yaml"), "RoleBinding");
  CHECK(rb["subjects"] == nlohmann::json::array({subject}));
  CHECK(rb["roleRef"]["name"] == role["metadata"]["name"]);
  CHECK(rb["metadata"]["namespace"] == deploy["metadata"]["namespace"]);
}

TEST_CASE("The Deployment runs two replicas probed without the API server") {
  const auto deploy = only(docs_of("manifests/deployment.yaml"), "Deployment");
  CHECK(deploy["spec"]["replicas"] == 2);
  const auto& pod = deploy["spec"]["template"]["spec"];
  CHECK(pod["serviceAccountName"] == "tollgate");
  const auto& c = pod["containers"][0];
  CHECK(c["livenessProbe"]["httpGet"]["path"] == "/healthz");
  CHECK(c["startupProbe"]["httpGet"]["path"] == "/healthz");
  CHECK(c["readinessProbe"]["httpGet"]["path"] == "/readyz");
  std::map<std::string, std::string> env;
  for (const auto& e : c["env"]) {
    env[e["name"].get<std::string>()] = e["valueFrom"]["fieldRef"]["fieldPath"].get<std::string>();
  }
  CHECK(env["POD_NAME"] == "metadata.name");
  CHECK(env["POD_NAMESPACE"] == "metadata.namespace");
  const auto& args = c["args"];
  CHECK(std::find(args.begin(), args.end(), "--lease-namespace=$(POD_NAMESPACE)") != args.end());
}

TEST_CASE("The shipped CRD serves v1 (stored) and v1beta1 with status and Istio's columns") {
  const auto crd = only(docs_of("crds/authorizationpolicies.security.istio.io.yaml"),
                        "CustomResourceDefinition");
  const auto& spec = crd["spec"];
  CHECK(spec["group"] == "security.istio.io");
  CHECK(spec["names"]["kind"] == "AuthorizationPolicy");
  std::vector<std::string> served, stored;
  for (const auto& v : spec["versions"]) {
    if (v["served"] == true) served.push_back(v["name"].get<std::string>());
    if (v["storage"] == true) stored.push_back(v["name"].get<std::string>());
    CHECK(v["subresources"]["status"] == nlohmann::json::object());
    const auto& columns = v["additionalPrinterColumns"];
    REQUIRE(columns.size() == 2);
    CHECK(columns[0]["name"] == "Action");
    CHECK(columns[0]["jsonPath"] == ".spec.action");
    CHECK(columns[1]["name"] == "Age");
    CHECK(columns[1]["jsonPath"] == ".metadata.creationTimestamp");
    const auto& s = v["schema"]["openAPIV3Schema"]["properties"];
    CHECK(s["spec"]["properties"]["action"]["enum"] ==
          nlohmann::json::array({"ALLOW", "DENY", "AUDIT", "CUSTOM"}));
    CHECK(s["status"]["x-kubernetes-preserve-unknown-fields"] == true);
  }
  CHECK(served == std::vector<std::string>{"v1", "v1beta1"});
  CHECK(stored == std::vector<std::string>{"v1"});
}

}  // namespace
}  // namespace tollgate
