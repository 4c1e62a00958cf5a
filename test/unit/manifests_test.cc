#include "tollgate/source/manifests.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

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

namespace {

// Block-style YAML for a JSON value: strings double-quoted (JSON escapes are YAML's), so the
// YAML reader sees exactly the JSON's types.
void to_yaml(const nlohmann::json& v, int indent, std::string& out) {
  const std::string pad(static_cast<std::size_t>(indent), ' ');
  auto scalar = [](const nlohmann::json& x) { return x.dump(); };
  if (v.is_object()) {
    if (v.empty()) {
      out += " {}\n";
      return;
    }
    out += "\n";
    for (const auto& [k, x] : v.items()) {
      out += pad + nlohmann::json(k).dump() + ":";
      if (x.is_structured() && !x.empty()) {
        to_yaml(x, indent + 2, out);
      } else {
        out +=
            " " + (x.is_structured() ? std::string(x.is_object() ? "{}" : "[]") : scalar(x)) + "\n";
      }
    }
  } else if (v.is_array()) {
    out += "\n";
    for (const auto& x : v) {
      out += pad + "-";
      if (x.is_structured() && !x.empty()) {
        to_yaml(x, indent + 2, out);
      } else {
        out +=
            " " + (x.is_structured() ? std::string(x.is_object() ? "{}" : "[]") : scalar(x)) + "\n";
      }
    }
  }
}

index::PodObject manifest_pod(const std::string& text, const std::string& origin) {
  auto f = source::read_text(text, origin);
  INFO(origin << ": " << (f.ok() ? "" : f.error().message));
  REQUIRE(f.ok());
  REQUIRE(f->pods.size() == 1);
  return f->pods[0];
}

}  // namespace

// One decoding rule per kind: the same pod object, from the API server or from a manifest
// file (JSON, YAML, inside a List), becomes the same workload record.
TEST_CASE("every pod fixture decodes alike from the API server and from manifests") {
  int n = 0;
  for (const auto& e :
       std::filesystem::directory_iterator(testing::source_path("test/fixtures/pods"))) {
    if (e.path().extension() != ".json") continue;
    ++n;
    const std::string text = testing::read_file(e.path());
    INFO(e.path().filename().string());
    auto api = index::decode_pod(text);
    REQUIRE(api.ok());
    CHECK(manifest_pod(text, "pod.json") == *api);
    const auto j = nlohmann::json::parse(text);
    std::string yaml;
    to_yaml(j, 0, yaml);
    CHECK(manifest_pod(yaml, "pod.yaml") == *api);
    const nlohmann::json list = {{"apiVersion", "v1"}, {"kind", "List"}, {"items", {j}}};
    CHECK(manifest_pod(list.dump(2), "list.json") == *api);
  }
  CHECK(n >= 8);
}

TEST_CASE("the deprecated serviceAccount and finished pods read alike on both paths") {
  const auto legacy = index::decode_pod(
      testing::read_file(testing::source_path("test/fixtures/pods/deprecated-account.json")));
  REQUIRE(legacy.ok());
  CHECK(legacy->service_account == "legacy");
  for (const char* f : {"succeeded.json", "failed.json", "host-network.json", "deleting.json"}) {
    INFO(f);
    const std::string text = testing::read_file(testing::source_path("test/fixtures/pods/") + f);
    CHECK_FALSE(index::decode_pod(text)->is_workload());
    source::ClusterState s;
    source::add_objects(s, *source::read_text(text, f));
    CHECK(s.workloads.empty());
  }
}

TEST_CASE("a pod's uid is read; a controller's pod template has none") {
  auto pod = index::decode_pod(
      R"({"kind":"Pod","metadata":{"name":"p","namespace":"x","uid":"0d5c-11"}})");
  REQUIRE(pod.ok());
  CHECK(pod->uid == "0d5c-11");
  auto bad = index::decode_pod(R"({"kind":"Pod","metadata":{"name":"p","namespace":"x","uid":7}})");
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(bad.error().message, Catch::Contains("metadata.uid"));
  auto tpl = index::decode_pod_template(
      R"({"kind":"Deployment","metadata":{"name":"d","namespace":"x","uid":"dep-uid"},)"
      R"("spec":{"template":{"metadata":{"labels":{"app":"d"}},"spec":{}}}})",
      "Deployment");
  REQUIRE(tpl.ok());
  CHECK(tpl->uid.empty());
}

TEST_CASE("a label that is not a string fails on both paths, naming the field") {
  const std::string text =
      R"({"kind":"Pod","metadata":{"name":"p","namespace":"x","labels":{"version":1}}})";
  auto api = index::decode_pod(text);
  REQUIRE_FALSE(api.ok());
  CHECK_THAT(api.error().message, Catch::Contains("metadata.labels.version: must be a string"));
  auto manifest = source::read_text(text, "p.json");
  REQUIRE_FALSE(manifest.ok());
  CHECK_THAT(manifest.error().message, Catch::StartsWith("p.json: Pod x/p: metadata.labels"));
}

TEST_CASE("a pod without a namespace is in the default namespace in a manifest only") {
  const std::string text = R"({"kind":"Pod","metadata":{"name":"p"}})";
  CHECK_FALSE(index::decode_pod(text).ok());
  CHECK(manifest_pod(text, "p.json").namespace_ == "default");
}

TEST_CASE("controllers stand for one pod each, from their pod template") {
  auto f = source::read_text(R"(
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: batch}
spec:
  schedule: "0 0 * * *"
  jobTemplate:
    spec:
      template:
        metadata: {labels: {app: nightly}}
        spec: {serviceAccount: runner, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec: {template: {metadata: {labels: {app: web}}, spec: {hostNetwork: true}}}
)",
                             "c.yaml");
  REQUIRE(f.ok());
  REQUIRE(f->pods.size() == 2);
  CHECK(f->pods[0].name == "nightly");
  CHECK(f->pods[0].namespace_ == "batch");
  CHECK(f->pods[0].service_account == "runner");
  CHECK(f->pods[0].labels == std::vector<std::pair<std::string, std::string>>{{"app", "nightly"}});
  CHECK(f->pods[0].ports.at(0).number == 80);
  CHECK(f->pods[0].is_workload());
  CHECK(f->pods[1].namespace_ == "default");
  CHECK_FALSE(f->pods[1].is_workload());  // hostNetwork
  auto bad = source::read_text("kind: StatefulSet\nmetadata: {name: db}\nspec: {}\n", "s.yaml");
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(bad.error().message, Catch::Contains("spec.template: the pod template is required"));
}

TEST_CASE("a file over the size limit is an error naming it, the limit and the flag") {
  TempDir d;
  write_file(d.path() / "big.json", std::string(2000, ' ') + "{}");
  source::ReadOptions o;
  o.max_file_bytes = 1000;
  auto r = source::read_file((d.path() / "big.json").string(), o);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message,
             Catch::Contains("big.json: 2002 bytes, more than the limit of 1000"));
  CHECK_THAT(r.error().message, Catch::Contains("--max-manifest-bytes"));
  o.max_file_bytes = 3000;
  CHECK(source::read_file((d.path() / "big.json").string(), o).ok());
}

TEST_CASE("a JSON List is read in place, Lists nested in it too, with item origins") {
  const std::string text = R"({"apiVersion":"v1","items":[
    {"kind":"Namespace","metadata":{"name":"shop"}},
    {"kind":"PodList","items":[{"kind":"Pod","metadata":{"name":"a","namespace":"shop"}}]},
    {"kind":"AuthorizationPolicy","apiVersion":"security.istio.io/v1",
     "metadata":{"name":"p","namespace":"shop"},"spec":{"action":"DENY","rules":[{}]}},
    null,
    {"kind":"ConfigMap","metadata":{"name":"c"}}],"kind":"List","metadata":{}})";
  auto f = source::read_text(text, "x.json");
  REQUIRE(f.ok());
  CHECK(f->pods.size() == 1);
  CHECK(f->policy_origins == std::vector<std::string>{"x.json.items[2]"});
  CHECK(f->namespaces == std::vector<std::string>{"shop"});
  CHECK(f->ignored == 1);
  auto broken = source::read_text(R"({"kind":"List","items":[{"kind":"Pod"},)", "y.json");
  REQUIRE_FALSE(broken.ok());
  CHECK_THAT(broken.error().message, Catch::StartsWith("y.json: line 1"));
}
