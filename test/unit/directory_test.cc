#include "tollgate/source/directory.h"

#include <catch2/catch.hpp>

#include "support/run.h"
#include "tollgate/publish/publisher.h"

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;
using testing::write_file;

const char* kPod = R"(apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {serviceAccountName: web}
)";

std::string deny_policy(const std::string& name) {
  return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: " + name +
         ", namespace: default}\nspec: {action: DENY, rules: [{}]}\n";
}

struct Running {
  publish::Publisher pub{policy::MeshConfig{},
                         publish::PublisherOptions{std::chrono::microseconds(500), 20ms, 64}};
  std::unique_ptr<source::DirectorySource> dir;
  explicit Running(const std::string& path) {
    pub.start();
    dir = std::make_unique<source::DirectorySource>(
        std::vector<std::string>{path},
        [this](index::Event e) { return pub.submit(std::move(e)); });
    dir->start(20ms);
  }
  std::vector<std::string> policies_of_web() {
    auto s = pub.current();
    const auto* e = s->find("default", "web");
    return e != nullptr && e->table ? e->table->table.policies : std::vector<std::string>{"?"};
  }
  bool wait_policies(const std::vector<std::string>& want) {
    return pub.wait_for(
               [&](const publish::Snapshot& s) {
                 const auto* e = s.find("default", "web");
                 return s.synced && e != nullptr && e->table && e->table->table.policies == want;
               },
               5s) != nullptr;
  }
};

TEST_CASE("The manifest directory is published, and edits to it are picked up") {
  TempDir d;
  write_file(d.path() / "pod.yaml", kPod);
  Running r(d.path().string());
  REQUIRE(r.wait_policies({}));
  write_file(d.path() / "deny.yaml", deny_policy("deny-all"));
  REQUIRE(r.wait_policies({"default/deny-all"}));
  std::filesystem::create_directory(d.path() / "more");
  write_file(d.path() / "more" / "deny2.yaml", deny_policy("deny-2"));
  REQUIRE(r.wait_policies({"default/deny-2", "default/deny-all"}));
  std::filesystem::remove(d.path() / "deny.yaml");
  REQUIRE(r.wait_policies({"default/deny-2"}));
}

TEST_CASE("A manifest that stops parsing keeps its last good version (a DENY is not lost)") {
  TempDir d;
  write_file(d.path() / "pod.yaml", kPod);
  write_file(d.path() / "deny.yaml", deny_policy("deny-all"));
  Running r(d.path().string());
  REQUIRE(r.wait_policies({"default/deny-all"}));
  const auto reloads = r.dir->reloads();
  write_file(d.path() / "deny.yaml", "spec: {action: DENY, rules: [{}]\n  broken: [");
  for (int i = 0; i < 200 && r.dir->reloads() == reloads; ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(r.dir->reloads() > reloads);
  std::this_thread::sleep_for(50ms);
  CHECK(r.policies_of_web() == std::vector<std::string>{"default/deny-all"});
}

TEST_CASE("A ConfigMap-style ..data symlink swap is seen") {
  TempDir d;
  const auto v1 = d.path() / "..v1";
  const auto v2 = d.path() / "..v2";
  std::filesystem::create_directory(v1);
  std::filesystem::create_directory(v2);
  write_file(v1 / "all.yaml", std::string(kPod) + "---\n" + deny_policy("first"));
  write_file(v2 / "all.yaml", std::string(kPod) + "---\n" + deny_policy("second"));
  std::filesystem::create_directory_symlink("..v1", d.path() / "..data");
  std::filesystem::create_symlink("..data/all.yaml", d.path() / "all.yaml");
  Running r(d.path().string());
  REQUIRE(r.wait_policies({"default/first"}));
  // kubelet's atomic writer: a new symlink, renamed over ..data.
  std::filesystem::create_directory_symlink("..v2", d.path() / "..data_tmp");
  std::filesystem::rename(d.path() / "..data_tmp", d.path() / "..data");
  REQUIRE(r.wait_policies({"default/second"}));
}

}  // namespace
}  // namespace tollgate
