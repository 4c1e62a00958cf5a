#include "tollgate/source/directory.h"

#include <catch2/catch.hpp>

#include "support/deadlines.h"
#include "support/fixtures.h"
#include "support/run.h"
#include "tollgate/publish/publisher.h"

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;
using testing::write_file;

using testing::kWebPodYaml;

std::string deny_policy(const std::string& name, int port = 0) {
  std::string rules =
      port == 0 ? "[{}]" : "[{to: [{operation: {ports: ['" + std::to_string(port) + "']}}]}]";
  return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: " + name +
         ", namespace: default}\nspec: {action: DENY, rules: " + rules + "}\n";
}

// Writes a file by renaming a complete one over it, as editors and kubectl cp do.
void replace_file(const std::filesystem::path& p, const std::string& text) {
  write_file(p.string() + ".tmp~", text);
  std::filesystem::rename(p.string() + ".tmp~", p);
}

struct Running {
  publish::Publisher pub{policy::MeshConfig{},
                         publish::PublisherOptions{std::chrono::microseconds(500), 20ms, 64}};
  std::unique_ptr<source::DirectorySource> dir;
  explicit Running(const std::string& path, source::DirectoryOptions o = {}) {
    pub.start();
    dir = std::make_unique<source::DirectorySource>(
        std::vector<std::string>{path}, [this](index::Event e) { return pub.submit(std::move(e)); },
        o);
    dir->start();
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
               testing::deadline(5s)) != nullptr;
  }
  // Waits for a published snapshot whose sources' health says `text` (health is published).
  std::shared_ptr<const publish::Snapshot> wait_health(const std::string& text) {
    return pub.wait_for(
        [&](const publish::Snapshot& s) {
          return !s.health.empty() && s.health[0].message.find(text) != std::string::npos;
        },
        testing::deadline(5s));
  }
};

TEST_CASE("The manifest directory is published, and edits to it are picked up") {
  TempDir d;
  write_file(d.path() / "pod.yaml", kWebPodYaml);
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
  write_file(d.path() / "pod.yaml", kWebPodYaml);
  write_file(d.path() / "deny.yaml", deny_policy("deny-all"));
  Running r(d.path().string());
  REQUIRE(r.wait_policies({"default/deny-all"}));
  replace_file(d.path() / "deny.yaml", "spec: {action: DENY, rules: [{}]\n  broken: [");
  // The health that says so is published with the state after the failed read.
  auto s = r.wait_health("keeping the last good version");
  REQUIRE(s);
  CHECK(s->synced);
  CHECK(s->health[0].healthy);
  CHECK(s->health[0].message.find("deny.yaml") != std::string::npos);
  const auto* e = s->find("default", "web");
  REQUIRE(e != nullptr);
  CHECK(e->table->table.policies == std::vector<std::string>{"default/deny-all"});
  // Fixed again: the new version is read, and the health is clean.
  replace_file(d.path() / "deny.yaml", deny_policy("deny-fixed"));
  REQUIRE(r.wait_policies({"default/deny-fixed"}));
  REQUIRE(r.wait_health("watching 2 manifest files"));
}

TEST_CASE("A file that cannot be read at start keeps everything unlisted and says why") {
  TempDir d;
  write_file(d.path() / "pod.yaml", kWebPodYaml);
  write_file(d.path() / "deny.yaml", deny_policy("deny-all"));
  write_file(d.path() / "cluster.json", std::string(300, ' ') + "{}");
  source::DirectoryOptions o;
  o.read.max_file_bytes = 200;
  SECTION("too large") {}
  SECTION("not parsable") {
    write_file(d.path() / "cluster.json", "{\"kind\": \"List\", \"items\": [");
    o.read.max_file_bytes = 1000;
  }
  SECTION("an object that does not decode") {
    write_file(d.path() / "cluster.json",
               R"({"kind":"Pod","metadata":{"name":"p","labels":{"version":1}}})");
    o.read.max_file_bytes = 1000;
  }
  Running r(d.path().string(), o);
  auto s = r.wait_health("not ready until every manifest can be read");
  REQUIRE(s);
  CHECK_FALSE(s->synced);
  CHECK(s->pods == 0);
  CHECK_FALSE(r.dir->listed());
  CHECK_FALSE(s->health[1].healthy);
  CHECK(s->health[1].message.find("cluster.json") != std::string::npos);
  // Once the file reads, everything is listed.
  replace_file(d.path() / "cluster.json", R"({"kind":"List","items":[]})");
  REQUIRE(r.wait_policies({"default/deny-all"}));
  CHECK(r.dir->listed());
}

TEST_CASE("A changed file is read again, and only that file") {
  TempDir d;
  write_file(d.path() / "pod.yaml", kWebPodYaml);
  write_file(d.path() / "a.yaml", deny_policy("a"));
  write_file(d.path() / "b.yaml", deny_policy("b"));
  Running r(d.path().string());
  REQUIRE(r.wait_policies({"default/a", "default/b"}));
  const auto read_before = r.dir->files_read();
  replace_file(d.path() / "b.yaml", deny_policy("b", 8080));
  REQUIRE(r.pub.wait_for(
      [](const publish::Snapshot& s) {
        const auto* e = s.find("default", "web");
        return e != nullptr && e->table && e->table->table.deny.size() == 2 &&
               e->table->wire.find("8080") != std::string::npos;
      },
      testing::deadline(5s)));
  CHECK(r.dir->files_read() == read_before + 1);
}

TEST_CASE("Where two files define one policy the later wins, and the earlier one comes back") {
  TempDir d;
  write_file(d.path() / "pod.yaml", kWebPodYaml);
  write_file(d.path() / "a.yaml", deny_policy("same", 1111));
  write_file(d.path() / "b.yaml", deny_policy("same", 2222));
  Running r(d.path().string());
  auto wire_has = [&](const char* port) {
    return r.pub.wait_for(
               [&](const publish::Snapshot& s) {
                 const auto* e = s.find("default", "web");
                 return s.synced && e != nullptr && e->table &&
                        e->table->wire.find(port) != std::string::npos;
               },
               testing::deadline(5s)) != nullptr;
  };
  REQUIRE(wire_has("2222"));
  std::filesystem::remove(d.path() / "b.yaml");  // a.yaml's version stands again
  REQUIRE(wire_has("1111"));
  std::filesystem::remove(d.path() / "a.yaml");  // and now nobody defines it
  REQUIRE(r.wait_policies({}));
}

TEST_CASE("A finished pod in a manifest is not a workload, as from the API server") {
  TempDir d;
  write_file(d.path() / "pods.yaml", std::string(kWebPodYaml) +
                                         "---\napiVersion: v1\nkind: Pod\nmetadata: {name: job, "
                                         "namespace: default}\nstatus: {phase: Succeeded}\n");
  Running r(d.path().string());
  REQUIRE(r.wait_policies({}));
  CHECK(r.pub.current()->pods == 1);
  CHECK(r.pub.current()->find("default", "job") == nullptr);
}

TEST_CASE("A ConfigMap-style ..data symlink swap is seen") {
  TempDir d;
  const auto v1 = d.path() / "..v1";
  const auto v2 = d.path() / "..v2";
  std::filesystem::create_directory(v1);
  std::filesystem::create_directory(v2);
  write_file(v1 / "all.yaml", std::string(kWebPodYaml) + "---\n" + deny_policy("first"));
  write_file(v2 / "all.yaml", std::string(kWebPodYaml) + "---\n" + deny_policy("second"));
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
