// The whole left half of the pipeline against the fake API server: watchers -> index ->
// published snapshots, through every fault the fake can produce. Every test ends by checking
// that the published tables equal a from-scratch compile of the fake server's final state.
#include <catch2/catch.hpp>
#include <random>
#include <thread>

#include "support/certs.h"
#include "support/deadlines.h"
#include "support/fake_apiserver.h"
#include "support/from_scratch.h"
#include "support/run.h"
#include "tollgate/app/cluster_source.h"
#include "tollgate/publish/publisher.h"
#include "tollgate/util/base64.h"

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using testing::FakeApiServer;
using Fault = FakeApiServer::Fault;
using nlohmann::json;

const std::string kPods = "/api/v1/pods";
const std::string kSAs = "/api/v1/serviceaccounts";
const std::string kNamespaces = "/api/v1/namespaces";
const std::string kPoliciesV1 = "/apis/security.istio.io/v1/authorizationpolicies";
const std::string kPoliciesV1beta1 = "/apis/security.istio.io/v1beta1/authorizationpolicies";

json mk_pod(const std::string& ns, const std::string& name, const std::string& app,
            const std::string& phase = "Running") {
  return json{{"metadata",
               {{"name", name},
                {"namespace", ns},
                {"labels", {{"app", app}, {"pod-template-hash", "abc"}}},
                {"ownerReferences", json::array({{{"kind", "ReplicaSet"}, {"name", app}}})}}},
              {"spec", {{"serviceAccountName", app}, {"containers", json::array()}}},
              {"status",
               {{"phase", phase},
                {"podIP", "10.1.0." + std::to_string(name.size())},
                {"podIPs", json::array({{{"ip", "10.1.0." + std::to_string(name.size())}}})}}}};
}

json mk_policy(const std::string& ns, const std::string& name, const std::string& app,
               const std::string& action, int port) {
  json spec = {
      {"action", action},
      {"rules",
       json::array(
           {{{"to", json::array(
                        {{{"operation", {{"ports", json::array({std::to_string(port)})}}}}})}}})}};
  if (!app.empty()) spec["selector"] = {{"matchLabels", {{"app", app}}}};
  return json{{"apiVersion", "security.istio.io/v1"},
              {"kind", "AuthorizationPolicy"},
              {"metadata", {{"name", name}, {"namespace", ns}}},
              {"spec", spec}};
}

json mk_named(const std::string& ns, const std::string& name) {
  json m = {{"name", name}};
  if (!ns.empty()) m["namespace"] = ns;
  return json{{"metadata", m}};
}

std::size_t requests_to(const FakeApiServer& api, const std::string& path) {
  std::size_t n = 0;
  for (const auto& r : api.requests()) n += r.target.rfind(path, 0) == 0 ? 1 : 0;
  return n;
}

// Waits until the fake has seen more than `seen` requests to `path`.
bool await_request(const FakeApiServer& api, const std::string& path, std::size_t seen) {
  return api.wait_for_requests(path, seen + 1, 10.0 * testing::kTimeScale);
}

// The requests made to exactly `path` (not its namespaced or other paths), in order.
std::vector<FakeApiServer::Request> requests_for(const FakeApiServer& api,
                                                 const std::string& path) {
  std::vector<FakeApiServer::Request> out;
  for (const auto& r : api.requests()) {
    if (r.target.substr(0, r.target.find('?')) == path) out.push_back(r);
  }
  return out;
}

// A request's query parameters, percent-decoded.
std::map<std::string, std::string> query_of(const std::string& target) {
  std::map<std::string, std::string> out;
  const auto q = target.find('?');
  if (q == std::string::npos) return out;
  std::string_view rest = std::string_view(target).substr(q + 1);
  auto decode = [](std::string_view v) {
    std::string d;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '%' && i + 2 < v.size()) {
        d += static_cast<char>(std::stoi(std::string(v.substr(i + 1, 2)), nullptr, 16));
        i += 2;
      } else {
        d += v[i];
      }
    }
    return d;
  };
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view part = rest.substr(0, amp);
    const auto eq = part.find('=');
    out[decode(part.substr(0, eq))] =
        eq == std::string_view::npos ? "" : decode(part.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return out;
}

// Waits until every source has reported itself failing: health changes are published.
bool all_failing(const publish::Publisher& pub) {
  return pub.wait_for(
             [](const publish::Snapshot& s) {
               return !s.health.empty() &&
                      std::all_of(s.health.begin(), s.health.end(), [](const auto& h) {
                        return !h.healthy && h.message.rfind("failing", 0) == 0;
                      });
             },
             testing::deadline(15s)) != nullptr;
}

struct Cluster {
  FakeApiServer api;
  std::string policies_path;
  publish::Publisher pub{policy::MeshConfig{},
                         publish::PublisherOptions{std::chrono::microseconds(500), 20ms, 256}};
  std::unique_ptr<app::ClusterSource> source;

  explicit Cluster(testing::FakeApiServerOptions o = {}, bool v1 = true)
      : api(std::move(o)), policies_path(v1 ? kPoliciesV1 : kPoliciesV1beta1) {
    api.add_collection(kPods, "PodList", "v1", false);
    api.add_collection(kSAs, "ServiceAccountList", "v1", false);
    api.add_collection(kNamespaces, "NamespaceList", "v1", false);
    api.add_collection(policies_path, "AuthorizationPolicyList",
                       v1 ? "security.istio.io/v1" : "security.istio.io/v1beta1", true);
    for (const auto* ns : {"default", "shop", "istio-system"}) {
      api.upsert(kNamespaces, mk_named("", ns));
      api.upsert(kSAs, mk_named(ns, "default"));
    }
    api.upsert(kPods, mk_pod("default", "web-1", "web"));
    api.upsert(kPods, mk_pod("default", "web-2", "web"));
    api.upsert(kPods, mk_pod("shop", "cart-1", "cart"));
    api.upsert(kPods, mk_pod("shop", "done-1", "cart", "Succeeded"));
    api.upsert(policies_path, mk_policy("default", "deny-web", "web", "DENY", 8080));
    api.upsert(policies_path, mk_policy("istio-system", "allow-all-80", "", "ALLOW", 80));
  }

  util::Status start(k8s::ClusterConfig config = {}, int watch_timeout_seconds = 5,
                     std::chrono::milliseconds initial_events_idle = 10s) {
    pub.start();
    config.server = api.url();
    auto parsed = k8s::parse_server(config);
    if (!parsed.ok()) return parsed.error();
    app::ClusterSourceOptions o;
    o.page_size = 2;  // several pages per list
    o.min_watch_timeout_seconds = watch_timeout_seconds;
    o.idle_slack = 1500ms;  // stalled streams are noticed quickly
    o.initial_events_idle = initial_events_idle;
    o.backoff = util::Backoff(20ms, 200ms);
    source = std::make_unique<app::ClusterSource>(
        *parsed, [this](index::Event e) { return pub.submit(std::move(e)); }, o);
    return source->start();
  }

  ~Cluster() {
    if (source) source->stop();
    pub.stop();
  }

  std::map<std::string, std::string> expected() const {
    std::vector<index::PolicyObject> policies;
    std::vector<index::PodObject> pods;
    for (const auto& o : api.objects(policies_path)) {
      policies.push_back(*index::decode_policy(o.dump()));
    }
    for (const auto& o : api.objects(kPods)) pods.push_back(*index::decode_pod(o.dump()));
    return testing::from_scratch(policies, pods, policy::MeshConfig{});
  }

  // Waits until the published tables equal a from-scratch compile of the fake's state.
  bool converged(std::chrono::milliseconds timeout = testing::deadline(15s)) {
    const auto want = expected();
    auto s = pub.wait_for(
        [&](const publish::Snapshot& snap) {
          return snap.synced && testing::published(snap) == want;
        },
        timeout);
    if (s == nullptr) {
      UNSCOPED_INFO("published vs expected:\n"
                    << testing::diff(testing::published(*pub.current()), want));
    }
    return s != nullptr;
  }
};

TEST_CASE("Lists and watch events are published as tables equal to a from-scratch compile") {
  Cluster c;
  REQUIRE(c.start().ok());
  REQUIRE(c.converged());
  auto s = c.pub.current();
  CHECK(s->pods == 3);  // the Succeeded pod is not a workload
  CHECK(s->find("default", "web-1")->table->table.policies ==
        std::vector<std::string>{"default/deny-web", "istio-system/allow-all-80"});
  CHECK(s->namespace_names->contains("shop"));
  CHECK(s->service_accounts->contains("shop/default"));

  REQUIRE(c.api.wait_for_watches(kPods, 1, 5 * testing::kTimeScale));
  c.api.upsert(kPods, mk_pod("shop", "cart-2", "cart"));
  c.api.remove(kPods, "default", "web-2");
  c.api.upsert(c.policies_path, mk_policy("shop", "deny-cart", "cart", "DENY", 9090));
  c.api.upsert(c.policies_path, mk_policy("default", "deny-web", "web", "DENY", 8081));
  REQUIRE(c.converged());
  CHECK(c.pub.current()->find("default", "web-2") == nullptr);
  c.api.remove(c.policies_path, "istio-system", "allow-all-80");
  REQUIRE(c.converged());
}

// A long-lived watch must hand each event over as it arrives, not when a buffer fills or the
// stream ends (a bug once: the body was read with async_read into a 64 KiB buffer).
TEST_CASE("Watch events are published as they arrive, long before the watch times out") {
  Cluster c;
  REQUIRE(c.start({}, 600).ok());
  REQUIRE(c.converged());
  REQUIRE(c.api.wait_for_watches(kPods, 1, 5 * testing::kTimeScale));
  REQUIRE(c.api.wait_for_watches(c.policies_path, 1, 5 * testing::kTimeScale));
  for (int i = 0; i < 3; ++i) {
    c.api.upsert(kPods, mk_pod("shop", "live-" + std::to_string(i), "cart"));
    c.api.upsert(c.policies_path, mk_policy("shop", "live", "cart", "DENY", 7000 + i));
    REQUIRE(c.converged(testing::deadline(3s)));
  }
  CHECK(c.source->stats()[1].relists == 0);
  CHECK(c.source->stats()[1].events >= 3);
}

// The protocol, request by request, as kube-rs's watcher tests assert it.
TEST_CASE("The first state comes from a streaming list, whose stream goes on as the watch") {
  Cluster c;
  REQUIRE(c.start().ok());
  REQUIRE(c.converged());
  auto reqs = requests_for(c.api, kPods);
  REQUIRE(reqs.size() == 1);  // no list, and no second request: the stream goes on
  auto q = query_of(reqs[0].target);
  CHECK(q["watch"] == "1");
  CHECK(q["sendInitialEvents"] == "true");
  CHECK(q["resourceVersionMatch"] == "NotOlderThan");
  CHECK(q["allowWatchBookmarks"] == "true");
  CHECK_FALSE(q.contains("resourceVersion"));  // the newest state: a consistent read
  CHECK_FALSE(q.contains("limit"));
  CHECK(std::stoi(q["timeoutSeconds"]) >= 5);
  CHECK(std::stoi(q["timeoutSeconds"]) < 10);
  auto st = c.source->stats()[1];
  CHECK(st.streaming_lists == 1);
  CHECK(st.lists == 1);
  CHECK(st.state == k8s::WatcherState::kWatching);

  c.api.upsert(kPods, mk_pod("shop", "cart-2", "cart"));
  REQUIRE(c.converged());
  CHECK(requests_for(c.api, kPods).size() == 1);  // the change came on the same stream
  // The stream ends: the watch resumes from the last version seen, without initial events.
  const std::string rv = c.api.resource_version();
  c.api.close_watches(kPods);
  REQUIRE(await_request(c.api, kPods, 1));
  reqs = requests_for(c.api, kPods);
  q = query_of(reqs[1].target);
  CHECK(q["watch"] == "1");
  CHECK(q["resourceVersion"] == rv);
  CHECK(q["allowWatchBookmarks"] == "true");
  CHECK_FALSE(q.contains("sendInitialEvents"));
  CHECK_FALSE(q.contains("resourceVersionMatch"));
}

TEST_CASE("A server that refuses streaming lists is listed in pages, then watched from the list") {
  Cluster c;
  c.api.set_watch_list(FakeApiServer::WatchList::kRefuse);
  const std::string rv = c.api.resource_version();
  REQUIRE(c.start().ok());
  REQUIRE(c.converged());
  const auto reqs = requests_for(c.api, kPods);
  REQUIRE(reqs.size() == 4);  // refused; 4 pods in pages of 2; the watch
  CHECK(reqs[0].status == 422);
  CHECK(query_of(reqs[0].target)["sendInitialEvents"] == "true");
  auto page1 = query_of(reqs[1].target);
  CHECK(page1["limit"] == "2");
  CHECK_FALSE(page1.contains("continue"));
  CHECK_FALSE(page1.contains("watch"));
  auto page2 = query_of(reqs[2].target);
  CHECK(page2["limit"] == "2");
  CHECK_FALSE(page2["continue"].empty());
  auto w = query_of(reqs[3].target);
  CHECK(w["watch"] == "1");
  CHECK(w["resourceVersion"] == rv);
  CHECK(w["allowWatchBookmarks"] == "true");
  CHECK_FALSE(w.contains("sendInitialEvents"));
  const auto st = c.source->stats()[1];
  CHECK_FALSE(st.streaming);
  CHECK(st.streaming_lists == 0);
  CHECK(st.lists == 1);
  // Later relists are paginated too: the server said once that it does not stream.
  c.api.inject(kPods, Fault::kErrorEvent410);
  c.api.close_watches(kPods);
  REQUIRE(await_request(c.api, kPods, 5));
  CHECK(query_of(requests_for(c.api, kPods)[5].target)["limit"] == "2");
}

TEST_CASE("A server that ignores sendInitialEvents is listed in pages once its stream goes quiet") {
  Cluster c;
  c.api.set_watch_list(FakeApiServer::WatchList::kIgnore);
  REQUIRE(c.start({}, 5, 300ms).ok());
  REQUIRE(c.converged());
  const auto reqs = requests_for(c.api, kPods);
  REQUIRE(reqs.size() >= 2);
  CHECK(query_of(reqs[0].target)["sendInitialEvents"] == "true");
  CHECK(reqs[0].status == 200);  // a plain watch: ADDED events, and no bookmark to end them
  CHECK(query_of(reqs[1].target)["limit"] == "2");
  const auto st = c.source->stats()[1];
  CHECK_FALSE(st.streaming);
  CHECK(st.lists == 1);
}

TEST_CASE("After a 410 the streaming list asks for the newest state, without a resourceVersion") {
  Cluster c;
  REQUIRE(c.start().ok());
  REQUIRE(c.converged());
  c.api.inject(kPods, Fault::kErrorEvent410);
  c.api.close_watches(kPods);
  REQUIRE(await_request(c.api, kPods, 2));
  const auto reqs = requests_for(c.api, kPods);
  CHECK(query_of(reqs[1].target).contains("resourceVersion"));  // the watch that met the 410
  auto q = query_of(reqs[2].target);
  CHECK(q["sendInitialEvents"] == "true");
  CHECK_FALSE(q.contains("resourceVersion"));
  c.api.upsert(kPods, mk_pod("shop", "after-410", "cart"));
  REQUIRE(c.converged());
  CHECK(c.source->stats()[1].relists >= 1);
}

TEST_CASE("AuthorizationPolicy falls back to v1beta1 when the server does not serve v1") {
  Cluster c({}, false);
  REQUIRE(c.start().ok());
  REQUIRE(c.converged());
  CHECK(c.source->stats()[0].path == kPoliciesV1beta1);
  CHECK(c.pub.current()->find("default", "web-1")->table->table.deny.size() == 1);
}

TEST_CASE("An expired resourceVersion relists, and objects deleted meanwhile are removed") {
  Cluster c;
  REQUIRE(c.start().ok());
  REQUIRE(c.converged());
  REQUIRE(c.api.wait_for_watches(kPods, 1, 5 * testing::kTimeScale));
  REQUIRE(c.api.wait_for_watches(c.policies_path, 1, 5 * testing::kTimeScale));
  // Take the watches down, change things while nobody watches, and forget the history. Ten
  // failures with backoff keep the watchers away for over a second, however slow this
  // thread is scheduled (ASan, a loaded machine).
  c.api.inject(kPods, Fault::kHttp500, 10);
  c.api.inject(c.policies_path, Fault::kHttp500, 10);
  const auto pods_seen = requests_to(c.api, kPods);
  const auto policies_seen = requests_to(c.api, c.policies_path);
  c.api.close_watches(kPods);
  c.api.close_watches(c.policies_path);
  // Once each watcher has come back and met its first 500, no watch is open.
  REQUIRE(await_request(c.api, kPods, pods_seen));
  REQUIRE(await_request(c.api, c.policies_path, policies_seen));
  c.api.remove(kPods, "default", "web-1");
  c.api.upsert(kPods, mk_pod("default", "web-3", "web"));
  c.api.remove(c.policies_path, "default", "deny-web");
  c.api.compact();
  REQUIRE(c.converged());
  CHECK(c.source->stats()[1].relists >= 1);
  CHECK(c.source->stats()[0].relists >= 1);
}

TEST_CASE("A 410 status on the watch request relists") {
  Cluster c;
  REQUIRE(c.start().ok());
  REQUIRE(c.converged());
  REQUIRE(c.api.wait_for_watches(kPods, 1, 5 * testing::kTimeScale));
  c.api.inject(kPods, Fault::kHttp410);
  c.api.close_watches(kPods);
  // The rewatch meets the 410 and relists. (A change made now could still ride out on the
  // closing watch, so the relist is awaited first.)
  bool relisted = false;
  for (int i = 0; i < 500 * testing::kTimeScale && !relisted; ++i) {
    relisted = c.source->stats()[1].relists >= 1;
    if (!relisted) std::this_thread::sleep_for(10ms);
  }
  REQUIRE(relisted);
  c.api.upsert(kPods, mk_pod("shop", "cart-9", "cart"));
  REQUIRE(c.converged());
}

TEST_CASE("Dropped, garbage, stalled and erroring watches resume and converge") {
  Cluster c;
  REQUIRE(c.start().ok());
  REQUIRE(c.converged());
  int n = 0;
  for (auto fault :
       {Fault::kDropMidStream, Fault::kGarbageLine, Fault::kStall, Fault::kErrorEvent410,
        Fault::kDropBeforeResponse, Fault::kHttp500, Fault::kHttp429}) {
    INFO("fault " << static_cast<int>(fault));
    REQUIRE(c.api.wait_for_watches(kPods, 1, 10 * testing::kTimeScale));
    c.api.set_stall_seconds(3);
    const auto seen = requests_to(c.api, kPods);
    c.api.inject(kPods, fault);
    c.api.close_watches(kPods);
    // The next request takes the fault; change the cluster only after it was made, so the
    // change cannot ride out on the closing watch instead.
    REQUIRE(await_request(c.api, kPods, seen));
    c.api.upsert(kPods, mk_pod("shop", "p" + std::to_string(n++), "cart"));
    REQUIRE(c.converged());
  }
  const auto st = c.source->stats()[1];
  CHECK(st.bad_lines >= 1);
  CHECK(st.errors >= 3);
}

TEST_CASE("A 401 is survived: once the credentials work again the watch converges") {
  testing::FakeApiServerOptions o;
  o.bearer_token = "first-token";
  Cluster c(o);
  k8s::ClusterConfig config;
  config.token = "first-token";
  REQUIRE(c.start(config).ok());
  REQUIRE(c.converged());
  c.api.inject(kPods, Fault::kHttp401, 2);
  c.api.close_watches(kPods);
  c.api.upsert(kPods, mk_pod("shop", "after-401", "cart"));
  REQUIRE(c.converged());
  for (const auto& r : c.api.requests()) CHECK(r.authorization == "Bearer first-token");
}

TEST_CASE("Watching over TLS verifies the server's certificate") {
  testing::FakeApiServerOptions o;
  o.tls = true;
  Cluster c(o);
  k8s::ClusterConfig config;
  config.ca_pem = c.api.ca_pem();
  REQUIRE(c.start(config).ok());
  REQUIRE(c.converged());
}

TEST_CASE("An untrusted server certificate is refused and nothing is published as synced") {
  testing::FakeApiServerOptions o;
  o.tls = true;
  Cluster c(o);
  k8s::ClusterConfig config;
  config.ca_pem = testing::make_self_signed("someone else").certificate;
  REQUIRE(c.start(config).ok());
  REQUIRE(all_failing(c.pub));
  CHECK_FALSE(c.pub.current()->synced);
  CHECK(c.api.requests().empty());  // the handshake failed before any request
}

TEST_CASE("tollgate run --kubeconfig --once prints the cluster's tables (TLS and a token)") {
  testing::FakeApiServerOptions o;
  o.tls = true;
  o.bearer_token = "s3cret-token";
  Cluster c(o);
  testing::TempDir dir;
  testing::write_file(
      dir.path() / "kubeconfig",
      "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
      "clusters:\n- name: fake\n  cluster:\n    server: " +
          c.api.url() + "\n    certificate-authority-data: " + util::encode_base64(c.api.ca_pem()) +
          "\nusers:\n- name: me\n  user:\n    token: s3cret-token\n"
          "contexts:\n- name: fake\n  context: {cluster: fake, user: me}\n");
  const auto r = testing::run_tollgate("run --once --log-level debug --kubeconfig '" +
                                       (dir.path() / "kubeconfig").string() + "'");
  INFO(r.err);
  REQUIRE(r.status == 0);
  // --log-level debug: each watch start is logged (here the streaming lists).
  CHECK(r.err.find("\"msg\":\"streaming list started\",\"kind\":\"Pod\"") != std::string::npos);
  CHECK(r.out.find("\"pod\":\"web-1\"") != std::string::npos);
  CHECK(r.out.find("\"pod\":\"cart-1\"") != std::string::npos);
  CHECK(r.out.find("\"pod\":\"done-1\"") == std::string::npos);
  CHECK(r.err.find("s3cret-token") == std::string::npos);  // never log a token
}

TEST_CASE("A server certificate for another name is refused (hostname verification)") {
  testing::FakeApiServerOptions o;
  o.tls = true;
  Cluster c(o);
  k8s::ClusterConfig config;
  config.ca_pem = c.api.ca_pem();
  config.tls_server_name = "kubernetes.example.com";  // the certificate is for 127.0.0.1
  REQUIRE(c.start(config).ok());
  REQUIRE(all_failing(c.pub));
  CHECK_FALSE(c.pub.current()->synced);
  CHECK(c.api.requests().empty());
}

TEST_CASE("A client certificate from the kubeconfig authenticates to the server") {
  const auto client = testing::make_self_signed("tollgate");
  testing::FakeApiServerOptions o;
  o.tls = true;
  o.client_ca_pem = client.certificate;
  Cluster c(o);
  k8s::ClusterConfig config;
  config.ca_pem = c.api.ca_pem();
  SECTION("with the certificate the watch converges") {
    config.client_cert_pem = client.certificate;
    config.client_key_pem = client.private_key;
    REQUIRE(c.start(config).ok());
    REQUIRE(c.converged());
  }
  SECTION("without it the server refuses the connection") {
    REQUIRE(c.start(config).ok());
    REQUIRE(all_failing(c.pub));
    CHECK_FALSE(c.pub.current()->synced);
  }
}

// Thousands of mutations interleaved with every fault kind; at the end the tables equal a
// from-scratch compile of the final state.
TEST_CASE("Soak: random mutations and faults end in tables equal to a from-scratch compile") {
  Cluster c;
  REQUIRE(c.start().ok());
  REQUIRE(c.converged());
  std::mt19937 rng(2026);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const std::vector<std::string> nss = {"default", "shop", "istio-system"};
  const std::vector<std::string> apps = {"web", "cart", "db"};
  const std::vector<Fault> faults = {
      Fault::kHttp500,       Fault::kHttp429,     Fault::kHttp410, Fault::kDropBeforeResponse,
      Fault::kDropMidStream, Fault::kGarbageLine, Fault::kStall,   Fault::kErrorEvent410};
  c.api.set_stall_seconds(2);
  for (int step = 0; step < 3000; ++step) {
    const auto& ns = nss[static_cast<std::size_t>(pick(3))];
    const int what = pick(100);
    if (what < 55) {
      c.api.upsert(kPods, mk_pod(ns, "pod-" + std::to_string(pick(40)),
                                 apps[static_cast<std::size_t>(pick(3))],
                                 pick(20) == 0 ? "Failed" : "Running"));
    } else if (what < 75) {
      c.api.remove(kPods, ns, "pod-" + std::to_string(pick(40)));
    } else if (what < 90) {
      c.api.upsert(c.policies_path,
                   mk_policy(ns, "pol-" + std::to_string(pick(6)),
                             pick(4) == 0 ? "" : apps[static_cast<std::size_t>(pick(3))],
                             pick(2) == 0 ? "ALLOW" : "DENY", 80 + pick(3)));
    } else if (what < 95) {
      c.api.remove(c.policies_path, ns, "pol-" + std::to_string(pick(6)));
    } else if (what < 97) {
      const auto& path = pick(2) == 0 ? kPods : c.policies_path;
      c.api.inject(path, faults[static_cast<std::size_t>(pick(static_cast<int>(faults.size())))]);
      c.api.close_watches(path);
    } else if (what < 98) {
      c.api.compact();
    } else {
      c.api.bookmark(kPods);
    }
    if (step % 500 == 499) std::this_thread::sleep_for(50ms);
  }
  REQUIRE(c.converged(testing::deadline(60s)));
  const auto st = c.source->stats();
  INFO("pod relists " << st[1].relists << ", policy relists " << st[0].relists);
  CHECK(st[1].relists + st[0].relists >= 1);  // compactions forced at least one relist
}

}  // namespace
}  // namespace tollgate
