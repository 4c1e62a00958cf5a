#include "tollgate/source/manifests.h"

#include <catch2/catch.hpp>

#include "support/run.h"

using namespace tollgate;
using testing::TempDir;
using testing::write_file;

TEST_CASE("a directory of manifests becomes policies, workloads, accounts and namespaces") {
  TempDir d;
  std::filesystem::create_directories(d.path() / "sub");
  write_file(d.path() / "a.yaml", R"(
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: data}
spec: {template: {metadata: {labels: {app: db}}, spec: {serviceAccountName: db}}}
---
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: data, labels: {app: host}}
spec: {hostNetwork: true}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
)");
  write_file(d.path() / "sub" / "b.json",
             R"({"apiVersion":"v1","kind":"List","items":[
                 {"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"db","namespace":"data"}},
                 {"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy",
                  "metadata":{"name":"p","namespace":"data"},"spec":{}}]})");
  write_file(d.path() / "notes.txt", "not a manifest");
  write_file(d.path() / ".hidden.yaml", "kind: [");
  source::ClusterState s;
  source::load_paths(s, {d.path().string()});
  CHECK(s.errors.empty());
  REQUIRE(s.workloads.size() == 1);  // the hostNetwork pod is not a workload
  CHECK(s.workloads[0].name == "db");
  CHECK(s.workloads[0].service_account == "db");
  CHECK(s.workloads[0].labels.at("app") == "db");
  CHECK(s.service_accounts.count("data/db") == 1);
  REQUIRE(s.policies.size() == 1);
  CHECK(s.policy_origins[0] == (d.path() / "sub" / "b.json").string() + ".items[1]");
  CHECK(s.ignored == 1);
}

TEST_CASE("unreadable files are reported by name and the rest still loads") {
  TempDir d;
  write_file(d.path() / "bad.yaml", "kind: Pod\nmetadata: {name: [\n");
  write_file(d.path() / "good.yaml",
             "kind: AuthorizationPolicy\nmetadata: {name: ok, namespace: x}\n");
  source::ClusterState s;
  source::load_paths(s, {d.path().string(), (d.path() / "missing.yaml").string()});
  REQUIRE(s.errors.size() == 2);
  CHECK_THAT(s.errors[0], Catch::Contains("missing.yaml: no such file"));
  CHECK_THAT(s.errors[1], Catch::StartsWith((d.path() / "bad.yaml").string() + ":3:"));
  CHECK(s.policies.size() == 1);
}
