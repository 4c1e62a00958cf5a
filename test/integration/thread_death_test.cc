// A controller thread that dies takes the process down in order: each thread kind (the index
// thread, a watcher, the manifest watch) is killed by an injected failure; /readyz turns 503
// naming it at once, and `tollgate run` drains and exits 1.
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include "support/child.h"
#include "support/deadlines.h"
#include "support/fake_apiserver.h"
#include "support/fixtures.h"
#include "support/http_get.h"
#include "support/run.h"
#include "tollgate/app/cluster_source.h"
#include "tollgate/publish/publisher.h"
#include "tollgate/server/server.h"
#include "tollgate/source/directory.h"
#include "tollgate/util/log.h"
#include "tollgate/util/thread_failure.h"

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::deadline;

// A Publisher and a Server sharing one ThreadFailures, whose first report is awaitable.
struct Controller {
  util::ThreadFailures failures;
  std::promise<void> failed;
  publish::Publisher pub{policy::MeshConfig{}, [this] {
                           publish::PublisherOptions o;
                           o.failures = &failures;
                           return o;
                         }()};
  std::unique_ptr<server::Server> server;

  Controller() {
    failures.add_listener([this, once = std::make_shared<std::once_flag>()] {
      std::call_once(*once, [this] { failed.set_value(); });
    });
    server::ServerOptions so;
    so.listen = "127.0.0.1:0";
    so.threads = 1;
    so.failures = &failures;
    server = std::make_unique<server::Server>(so, pub);
    pub.start();
    REQUIRE(server->start().ok());
  }
  ~Controller() {
    server->shutdown();
    pub.stop();
  }

  // Waits until the server's snapshot is synced: /readyz is 200.
  bool ready() {
    const auto until = std::chrono::steady_clock::now() + deadline(10s);
    while (std::chrono::steady_clock::now() < until) {
      auto r = testing::http_get(server->port(), "/readyz");
      if (r && r->status == 200) return true;
      pub.wait_for([](const publish::Snapshot& s) { return s.synced; }, 100ms);
    }
    return false;
  }
  bool await_failure() {
    return failed.get_future().wait_for(deadline(10s)) == std::future_status::ready;
  }
  // /readyz after a failure: 503, naming the thread.
  void check_not_ready(const std::string& thread) {
    auto r = testing::http_get(server->port(), "/readyz");
    REQUIRE(r);
    CHECK(r->status == 503);
    CHECK_THAT(r->body, Catch::Contains("a controller thread stopped (" + thread));
    CHECK_THAT(r->body, Catch::Contains("injected failure"));
  }
};

struct QuietLogs {
  QuietLogs() { util::set_log_level(util::LogLevel::kOff); }
  ~QuietLogs() { util::set_log_level(util::LogLevel::kInfo); }
};

// The four collections the controller watches, empty.
void add_collections(testing::FakeApiServer& api) {
  api.add_collection("/api/v1/pods", "PodList", "v1", false);
  api.add_collection("/api/v1/serviceaccounts", "ServiceAccountList", "v1", false);
  api.add_collection("/api/v1/namespaces", "NamespaceList", "v1", false);
  api.add_collection("/apis/security.istio.io/v1/authorizationpolicies", "AuthorizationPolicyList",
                     "security.istio.io/v1", true);
}

void sync_empty(publish::Publisher& pub) {
  for (auto k : {index::Kind::kPolicy, index::Kind::kPod, index::Kind::kServiceAccount,
                 index::Kind::kNamespace}) {
    pub.submit(testing::replace(k));
  }
}

TEST_CASE("A dead index thread turns /readyz to 503 at once, naming it, and closes its queue") {
  QuietLogs quiet;
  Controller c;
  sync_empty(c.pub);
  REQUIRE(c.ready());
  util::inject_thread_failure("publisher");
  c.pub.submit(testing::replace(index::Kind::kPod));
  REQUIRE(c.await_failure());
  c.check_not_ready("index");
  // wait_for() gives up once the index thread is dead (it does not wait for its deadline).
  c.pub.wait_for([](const publish::Snapshot&) { return false; }, deadline(10s));
  CHECK(c.pub.failed());
  CHECK_FALSE(c.pub.submit(testing::replace(index::Kind::kPod)));  // no producer blocks on it
  auto healthz = testing::http_get(c.server->port(), "/healthz");
  REQUIRE(healthz);
  CHECK(healthz->status == 200);  // alive: it is shutting down, not stuck
}

TEST_CASE("A dead watcher thread turns /readyz to 503 at once, naming its kind") {
  QuietLogs quiet;
  testing::FakeApiServer api;
  add_collections(api);
  Controller c;
  k8s::ClusterConfig config;
  config.server = api.url();
  auto parsed = k8s::parse_server(config);
  REQUIRE(parsed.ok());
  app::ClusterSourceOptions o;
  o.failures = &c.failures;
  app::ClusterSource source(
      *parsed, [&c](index::Event e) { return c.pub.submit(std::move(e)); }, o);
  REQUIRE(source.start().ok());
  REQUIRE(c.ready());
  REQUIRE(api.wait_for_watches("/api/v1/pods", 1, 10 * testing::kTimeScale));
  util::inject_thread_failure("watcher");
  api.upsert("/api/v1/pods", json{{"metadata", {{"name", "web"}, {"namespace", "default"}}}});
  REQUIRE(c.await_failure());
  c.check_not_ready("watcher Pod");
  source.stop();  // the other watchers stop as asked; only the dead one was reported
  CHECK_THAT(c.failures.cause(), Catch::StartsWith("watcher Pod: injected failure"));
}

TEST_CASE("A dead manifest watch thread turns /readyz to 503 at once, naming it") {
  QuietLogs quiet;
  testing::TempDir d;
  testing::write_file(d.path() / "pod.yaml", testing::kWebPodYaml);
  Controller c;
  source::DirectoryOptions o;
  o.failures = &c.failures;
  source::DirectorySource dir(
      {d.path().string()}, [&c](index::Event e) { return c.pub.submit(std::move(e)); }, o);
  dir.start();
  REQUIRE(c.ready());
  util::inject_thread_failure("directory");
  testing::write_file(d.path() / "another.yaml", testing::kWebPodYaml);
  REQUIRE(c.await_failure());
  c.check_not_ready("manifest watch");
  dir.stop();
}

// ---- tollgate run ---------------------------------------------------------------------------

std::string log_of(const testing::TempDir& d) { return (d.path() / "stderr").string(); }

std::string seed_copy(const testing::TempDir& d) {
  const auto to = d.path() / "manifests";
  std::filesystem::copy(testing::source_path("examples/seed"), to);
  return to.string();
}

// The child's log says which thread stopped (its name starts with `thread`) and why, and that
// it shut down.
void check_log(const testing::Child& child, const std::string& thread) {
  const auto log = child.log();
  CHECK_THAT(
      log, Catch::Contains(
               "\"msg\":\"a thread stopped unexpectedly; shutting down\",\"thread\":\"" + thread));
  CHECK_THAT(log, Catch::Contains("injected failure"));
  CHECK_THAT(log, Catch::Contains("server stopped"));  // the graceful drain ran
}

TEST_CASE("tollgate run exits 1 after draining when its index thread dies") {
  testing::TempDir d;
  testing::Child child;
  REQUIRE(child.spawn(TOLLGATE_BINARY,
                      {"run", "--manifests", seed_copy(d), "--listen", "127.0.0.1:0"}, log_of(d),
                      {"TOLLGATE_TEST_FAIL_THREAD=publisher"}));
  const auto status = child.await_exit(deadline(30s));
  INFO(child.log());
  REQUIRE(status);
  CHECK(*status == 1);
  check_log(child, "index");
}

TEST_CASE("tollgate run exits 1 after draining when its manifest watch thread dies") {
  testing::TempDir d;
  const auto manifests = seed_copy(d);
  const auto port_file = d.path() / "port";
  testing::Child child;
  REQUIRE(child.spawn(TOLLGATE_BINARY,
                      {"run", "--manifests", manifests, "--listen", "127.0.0.1:0", "--port-file",
                       port_file.string()},
                      log_of(d), {"TOLLGATE_TEST_FAIL_THREAD=directory"}));
  const auto port = testing::Child::wait_for_port(port_file.string(), deadline(30s));
  REQUIRE(port != 0);
  // Ready: the manifests are read, so the directories are watched (the port file comes first).
  bool ready = false;
  const auto until = std::chrono::steady_clock::now() + deadline(30s);
  while (!ready && std::chrono::steady_clock::now() < until && !child.await_exit(0ms)) {
    const auto r = testing::http_get(port, "/readyz");
    ready = r && r->status == 200;
    if (!ready) std::this_thread::sleep_for(20ms);  // another process: polled
  }
  INFO(child.log());
  REQUIRE(ready);
  testing::write_file(std::filesystem::path(manifests) / "pod.yaml", testing::kWebPodYaml);
  const auto status = child.await_exit(deadline(30s));
  REQUIRE(status);
  CHECK(*status == 1);
  check_log(child, "manifest watch");
}

TEST_CASE("tollgate run exits 1 after draining when a watcher thread dies") {
  testing::FakeApiServer api;
  add_collections(api);
  api.upsert("/api/v1/namespaces", json{{"metadata", {{"name", "default"}}}});
  testing::TempDir d;
  testing::write_file(d.path() / "kubeconfig",
                      "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
                      "clusters:\n- name: fake\n  cluster:\n    server: " +
                          api.url() +
                          "\nusers:\n- name: me\n  user: {}\n"
                          "contexts:\n- name: fake\n  context: {cluster: fake, user: me}\n");
  testing::Child child;
  REQUIRE(child.spawn(
      TOLLGATE_BINARY,
      {"run", "--kubeconfig", (d.path() / "kubeconfig").string(), "--listen", "127.0.0.1:0"},
      log_of(d), {"TOLLGATE_TEST_FAIL_THREAD=watcher"}));
  const auto status = child.await_exit(deadline(30s));
  INFO(child.log());
  REQUIRE(status);
  CHECK(*status == 1);
  check_log(child, "watcher ");  // whichever watcher reads a line first
}

TEST_CASE("tollgate run --once exits 1 at once when its index thread dies") {
  testing::TempDir d;
  testing::Child child;
  REQUIRE(child.spawn(TOLLGATE_BINARY, {"run", "--once", "--manifests", seed_copy(d)}, log_of(d),
                      {"TOLLGATE_TEST_FAIL_THREAD=publisher"}));
  const auto status = child.await_exit(deadline(20s));
  INFO(child.log());
  REQUIRE(status);
  CHECK(*status == 1);
  CHECK_THAT(child.log(),
             Catch::Contains("tollgate: a controller thread stopped: index: injected"));
}

TEST_CASE("tollgate agent exits 1 after draining when its sync thread dies") {
  testing::TempDir d;
  const auto port_file = d.path() / "port";
  testing::Child child;
  // The controller is unreachable: the sync thread's first pass reaches the injection point.
  REQUIRE(child.spawn(TOLLGATE_BINARY,
                      {"agent", "--controller", "http://127.0.0.1:1", "--namespace", "default",
                       "--pod", "web-1", "--state-dir", (d.path() / "state").string(), "--listen",
                       "127.0.0.1:0", "--port-file", port_file.string()},
                      log_of(d), {"TOLLGATE_TEST_FAIL_THREAD=sync"}));
  const auto status = child.await_exit(deadline(30s));
  INFO(child.log());
  REQUIRE(status);
  CHECK(*status == 1);
  check_log(child, "sync");
  CHECK_THAT(child.log(), Catch::Contains("shutting down: a thread stopped"));
}

}  // namespace
}  // namespace tollgate
