#include "tollgate/index/index.h"

#include <catch2/catch.hpp>
#include <random>

#include "support/fixtures.h"
#include "support/from_scratch.h"
#include "tollgate/publish/snapshot.h"

namespace tollgate {
namespace {

using index::Event;
using index::Kind;

using testing::del;
using testing::mk_pod;
using testing::mk_policy;
using testing::replace;
using testing::upsert;

struct Harness {
  index::Index idx{policy::MeshConfig{}};
  publish::SnapshotBuilder builder;
  publish::SnapshotBuilder::Result last;
  void sync() {
    for (auto k : {Kind::kPolicy, Kind::kPod, Kind::kServiceAccount, Kind::kNamespace}) {
      idx.apply(replace(k));
    }
  }
  const publish::Snapshot& publish() {
    last = builder.build(idx, idx.take_changes());
    return *last.snapshot;
  }
};

TEST_CASE("Pods with the same applicable policies share one compiled table") {
  Harness h;
  h.sync();
  h.idx.apply(upsert(mk_policy("default", "allow-a", R"({"selector":{"matchLabels":{"app":"a"}},
    "rules":[{}]})"),
                     Kind::kPolicy));
  for (int i = 0; i < 5; ++i) {
    h.idx.apply(upsert(mk_pod("default", "a-" + std::to_string(i),
                              {{"app", "a"}, {"pod-template-hash", std::to_string(i % 2)}}),
                       Kind::kPod));
  }
  h.idx.apply(upsert(mk_pod("default", "b-0", {{"app", "b"}}), Kind::kPod));
  const auto& s = h.publish();
  CHECK(s.synced);
  CHECK(s.pods == 6);
  CHECK(s.tables == 2);
  CHECK(s.find("default", "a-0")->table == s.find("default", "a-3")->table);
  CHECK(s.find("default", "a-0")->table != s.find("default", "b-0")->table);
  CHECK(s.find("default", "a-0")->table->table.policies ==
        std::vector<std::string>{"default/allow-a"});
  CHECK(s.find("default", "b-0")->table->table.policies.empty());
}

TEST_CASE("A policy change recompiles only the tables of the pods it selects") {
  Harness h;
  h.sync();
  h.idx.apply(upsert(mk_pod("default", "a", {{"app", "a"}}), Kind::kPod));
  h.idx.apply(upsert(mk_pod("default", "b", {{"app", "b"}}), Kind::kPod));
  h.idx.apply(upsert(mk_pod("other", "c", {{"app", "a"}}), Kind::kPod));
  h.publish();
  const auto before = h.last.snapshot;
  h.idx.apply(upsert(mk_policy("default", "deny-a", R"({"action":"DENY",
    "selector":{"matchLabels":{"app":"a"}},"rules":[{}]})"),
                     Kind::kPolicy));
  const auto& s = h.publish();
  CHECK(h.last.changed_pods == std::vector<std::string>{"default/a"});
  CHECK(h.last.compiled == 1);
  CHECK(s.namespaces.at("other") == before->namespaces.at("other"));  // shared, not copied
  CHECK(s.find("default", "b")->table == before->find("default", "b")->table);
  CHECK(s.find("default", "a")->table->table.deny.size() == 1);
}

TEST_CASE("Changing a policy's selector moves pods in and out, before and after") {
  Harness h;
  h.sync();
  h.idx.apply(upsert(mk_pod("default", "a", {{"app", "a"}}), Kind::kPod));
  h.idx.apply(upsert(mk_pod("default", "b", {{"app", "b"}}), Kind::kPod));
  h.idx.apply(upsert(mk_policy("default", "p", R"({"selector":{"matchLabels":{"app":"a"}}})"),
                     Kind::kPolicy));
  h.publish();
  h.idx.apply(upsert(mk_policy("default", "p", R"({"selector":{"matchLabels":{"app":"b"}}})"),
                     Kind::kPolicy));
  const auto& s = h.publish();
  CHECK(s.find("default", "a")->table->table.policies.empty());
  CHECK(s.find("default", "b")->table->table.policies == std::vector<std::string>{"default/p"});
  CHECK(h.last.changed_pods == std::vector<std::string>{"default/a", "default/b"});
}

TEST_CASE("A root-namespace policy applies in every namespace") {
  Harness h;
  h.sync();
  h.idx.apply(upsert(mk_pod("ns1", "a", {}), Kind::kPod));
  h.idx.apply(upsert(mk_pod("ns2", "b", {}), Kind::kPod));
  h.idx.apply(upsert(mk_policy("istio-system", "deny-all", R"({"action":"DENY","rules":[{}]})"),
                     Kind::kPolicy));
  const auto& s = h.publish();
  CHECK(s.find("ns1", "a")->table->table.deny.size() == 1);
  CHECK(s.find("ns2", "b")->table->table.deny.size() == 1);
}

TEST_CASE("Finished, deleting and hostNetwork pods are not workloads") {
  Harness h;
  h.sync();
  auto done = mk_pod("default", "job", {});
  done.phase = "Succeeded";
  auto host = mk_pod("default", "node-agent", {});
  host.host_network = true;
  auto going = mk_pod("default", "old", {});
  h.idx.apply(upsert(going, Kind::kPod));
  h.publish();
  going.deleting = true;
  h.idx.apply(upsert(done, Kind::kPod));
  h.idx.apply(upsert(host, Kind::kPod));
  h.idx.apply(upsert(going, Kind::kPod));
  const auto& s = h.publish();
  CHECK(s.pods == 0);
  CHECK(h.idx.stats().ignored_pods == 3);
}

TEST_CASE("A pod recreated under the same name carries its new uid into the snapshot") {
  Harness h;
  h.sync();
  auto pod = mk_pod("default", "web-1", {{"app", "web"}}, "10.0.0.1");
  pod.uid = "uid-1";
  h.idx.apply(upsert(pod, Kind::kPod));
  h.publish();
  const auto first = h.last.snapshot;
  REQUIRE(first->find("default", "web-1") != nullptr);
  CHECK(first->find("default", "web-1")->pod->uid == index::uid_digest("uid-1"));
  CHECK_FALSE(first->find("default", "web-1")->pod->uid == index::uid_digest("uid-2"));
  pod.uid = "uid-2";  // same name, labels and IP: only the uid says it is another pod
  h.idx.apply(upsert(pod, Kind::kPod));
  h.publish();
  const auto second = h.last.snapshot;
  REQUIRE(second->find("default", "web-1") != nullptr);
  CHECK(second->find("default", "web-1")->pod->uid == index::uid_digest("uid-2"));
}

TEST_CASE("A relist removes what was deleted while the watch was down") {
  Harness h;
  h.sync();
  h.idx.apply(upsert(mk_pod("default", "a", {}, "10.0.0.1"), Kind::kPod));
  h.idx.apply(upsert(mk_pod("default", "b", {}, "10.0.0.2"), Kind::kPod));
  h.idx.apply(upsert(mk_policy("default", "p", R"({"rules":[{}]})"), Kind::kPolicy));
  h.publish();
  CHECK(h.last.snapshot->find_ip("10.0.0.2") != nullptr);
  h.idx.apply(replace(Kind::kPod, {mk_pod("default", "a", {}, "10.0.0.1")}));
  h.idx.apply(replace(Kind::kPolicy, {}));
  const auto& s = h.publish();
  CHECK(s.find("default", "b") == nullptr);
  CHECK(s.find_ip("10.0.0.2") == nullptr);
  CHECK(s.find_ip("10.0.0.1")->pod->name == "a");
  CHECK(s.find("default", "a")->table->table.policies.empty());
}

TEST_CASE("An update that does not change a policy's meaning recompiles nothing") {
  Harness h;
  h.sync();
  h.idx.apply(upsert(mk_pod("default", "a", {}), Kind::kPod));
  h.idx.apply(upsert(mk_policy("default", "p", R"({"rules":[{}]})"), Kind::kPolicy));
  h.publish();
  h.idx.apply(replace(Kind::kPolicy, {mk_policy("default", "p", R"({"rules":[{}]})")}));
  CHECK(h.idx.changes().empty());
}

TEST_CASE("Readiness waits for every kind's first list") {
  index::Index idx{policy::MeshConfig{}};
  idx.apply(replace(Kind::kPolicy));
  idx.apply(replace(Kind::kPod));
  idx.apply(replace(Kind::kServiceAccount));
  CHECK_FALSE(idx.synced());
  idx.apply(replace(Kind::kNamespace));
  CHECK(idx.synced());
}

TEST_CASE("Snapshots carry each source's health, and how fresh the data is") {
  Harness h;
  CHECK(h.publish().fresh_as_of(std::chrono::system_clock::now()).time_since_epoch().count() ==
        0);  // never synced
  h.sync();
  const auto now = std::chrono::system_clock::now();
  CHECK(h.publish().fresh_as_of(now) == now);
  Event down;
  down.kind = Kind::kPod;
  down.type = Event::Type::kHealth;
  down.healthy = false;
  down.message = "watch failing";
  h.idx.apply(down);
  const auto& s = h.publish();
  CHECK_FALSE(s.health[1].healthy);
  CHECK(s.health[1].kind == "Pod");
  CHECK(s.health[1].message == "watch failing");
  const auto later = std::chrono::system_clock::now() + std::chrono::hours(1);
  CHECK(s.fresh_as_of(later) == s.health[1].since);
  CHECK(s.fresh_as_of(later) < later);
}

// What is wrong with a snapshot's IP index, compared with the pods it should hold: every IP
// of a workload pod finds that pod (the first by namespace/name when pods share an IP), and
// every entry is a pod of this snapshot (not a stale PodInfo of an earlier one).
std::string ip_index_problems(const publish::Snapshot& s,
                              const std::map<std::string, index::PodObject>& pods) {
  std::map<std::string, std::string> want;  // ip -> "ns/name", the first
  std::size_t entries = 0;
  for (const auto& [key, pod] : pods) {
    if (!pod.is_workload()) continue;
    for (const auto& ip : pod.ips) {
      ++entries;
      if (!want.contains(ip)) want[ip] = key;
    }
  }
  std::string out;
  for (const auto& [ip, key] : want) {
    const auto* e = s.find_ip(ip);
    const std::string got = e == nullptr ? "none" : e->pod->shape->namespace_ + "/" + e->pod->name;
    if (got != key) out += ip + ": found " + got + ", expected " + key + "\n";
  }
  for (const char* ip : {"10.9.9.9", "", "10.0.0.100"}) {
    if (s.find_ip(ip) != nullptr) out += std::string(ip) + ": found, expected none\n";
  }
  std::size_t found = 0;
  for (const auto& shard : *s.by_ip) {
    for (const auto& e : *shard) {
      ++found;
      const auto* p = s.find(e.pod->shape->namespace_, e.pod->name);
      if (p == nullptr || p->pod.get() != e.pod) out += "a stale entry for " + e.pod->name + "\n";
    }
  }
  if (found != entries) {
    out += std::to_string(found) + " entries, expected " + std::to_string(entries) + "\n";
  }
  return out;
}

TEST_CASE("The snapshot's policies read like a std::map, in key order, one namespace copied") {
  Harness h;
  h.sync();
  // "a-b/..." sorts before "a/..." ('-' < '/'): the shards must come in key order.
  for (const auto* key : {"a/x", "a-b/y", "a/z", "b/w", "a.c/v"}) {
    const std::string k = key;
    const auto slash = k.find('/');
    h.idx.apply(upsert(mk_policy(k.substr(0, slash), k.substr(slash + 1), R"({"rules":[{}]})"),
                       Kind::kPolicy));
  }
  const auto before = h.publish().policies;
  std::vector<std::string> keys;
  for (const auto& [k, p] : *before) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"a-b/y", "a.c/v", "a/x", "a/z", "b/w"});
  CHECK(before->size() == 5);
  CHECK(before->find("a/z")->second->name == "z");
  CHECK(before->find("a/q") == before->end());
  CHECK(before->find("nope") == before->end());
  h.idx.apply(del(mk_policy("a", "x", "{}"), Kind::kPolicy));
  const auto after = h.publish().policies;
  CHECK(after->size() == 4);
  CHECK(after->find("a/x") == after->end());
  CHECK(before->find("a/x") != before->end());  // the published one is unchanged
  CHECK(after->find("b/w")->second == before->find("b/w")->second);
}

// Random interleavings of pod and policy changes: the incrementally maintained snapshot
// always equals a compile from scratch of the same objects, and so do its IP index and its
// policy map.
TEST_CASE("Incremental snapshots equal a from-scratch compile after random changes") {
  std::mt19937 rng(12345);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const std::vector<std::string> nss = {"istio-system", "a", "b"};
  const std::vector<std::string> apps = {"x", "y", "z"};
  Harness h;
  h.sync();
  std::map<std::string, index::PodObject> pods;
  std::map<std::string, index::PolicyObject> policies;
  for (int step = 0; step < 3000; ++step) {
    const int what = pick(10);
    const std::string ns = nss[static_cast<std::size_t>(pick(3))];
    if (what < 5) {
      auto pod = mk_pod(ns, "p" + std::to_string(pick(8)),
                        {{"app", apps[static_cast<std::size_t>(pick(3))]}},
                        "10.0.0." + std::to_string(pick(12)));  // shared and moving IPs
      if (pick(4) == 0) pod.ips.push_back("fd00::" + std::to_string(pick(12)));
      if (pick(10) == 0) pod.phase = "Failed";
      pods[pod.namespace_ + "/" + pod.name] = pod;
      h.idx.apply(upsert(pod, Kind::kPod));
    } else if (what < 6 && !pods.empty()) {
      auto it = std::next(pods.begin(), pick(static_cast<int>(pods.size())));
      h.idx.apply(del(it->second, Kind::kPod));
      pods.erase(it);
    } else if (what < 9) {
      const std::string sel = pick(3) == 0
                                  ? ""
                                  : R"("selector":{"matchLabels":{"app":")" +
                                        apps[static_cast<std::size_t>(pick(3))] + R"("}},)";
      const std::string action = pick(2) == 0 ? "ALLOW" : "DENY";
      auto p = mk_policy(ns, "pol" + std::to_string(pick(4)),
                         "{" + sel + R"("action":")" + action + R"(","rules":[{"to":[{"operation":
                         {"ports":[")" +
                             std::to_string(pick(3) + 80) + R"("]}}]}]})");
      policies[p.policy->key()] = p;
      h.idx.apply(upsert(p, Kind::kPolicy));
    } else if (!policies.empty()) {
      auto it = std::next(policies.begin(), pick(static_cast<int>(policies.size())));
      h.idx.apply(del(it->second, Kind::kPolicy));
      policies.erase(it);
    }
    if (pick(7) == 0 || step == 2999) {
      const auto& s = h.publish();
      std::vector<index::PolicyObject> pv;
      std::vector<index::PodObject> podv;
      for (const auto& [k, p] : policies) pv.push_back(p);
      for (const auto& [k, p] : pods) podv.push_back(p);
      const auto want = testing::from_scratch(pv, podv, policy::MeshConfig{});
      INFO("step " << step << "\n" << testing::diff(testing::published(s), want));
      REQUIRE(testing::published(s) == want);
      std::vector<std::string> keys, want_keys;
      for (const auto& [k, p] : *s.policies) {
        keys.push_back(k);
        REQUIRE(s.policies->find(k)->second == p);
      }
      for (const auto& [k, p] : policies) want_keys.push_back(k);
      REQUIRE(keys == want_keys);
      REQUIRE(s.policies->size() == policies.size());
      const std::string ip_problems = ip_index_problems(s, pods);
      INFO("step " << step << "\n" << ip_problems);
      REQUIRE(ip_problems.empty());
    }
  }
  CHECK(h.idx.stats().groups == h.last.snapshot->tables);
}

}  // namespace
}  // namespace tollgate
