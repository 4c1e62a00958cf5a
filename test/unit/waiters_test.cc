#include "tollgate/server/waiters.h"

#include <catch2/catch.hpp>

#include "support/fixtures.h"
#include "tollgate/index/index.h"

namespace tollgate {
namespace {

using index::Kind;

// Counts its wake-ups.
struct CountingWaiter final : server::Waiter {
  int woken = 0;
  void wake() override { ++woken; }
};

// Snapshots of a small cluster: pods web-1 and db-1 in "default", and what changes them.
struct Cluster {
  index::Index idx{policy::MeshConfig{}};
  publish::SnapshotBuilder builder;

  publish::SnapshotBuilder::Result publish() { return builder.build(idx, idx.take_changes()); }
  publish::SnapshotBuilder::Result synced() {
    for (auto k : {Kind::kPolicy, Kind::kServiceAccount, Kind::kNamespace}) {
      idx.apply(testing::replace(k));
    }
    idx.apply(testing::replace(Kind::kPod, {testing::mk_pod("default", "web-1", {{"app", "web"}}),
                                            testing::mk_pod("default", "db-1", {{"app", "db"}})}));
    return publish();
  }
  // A DENY for web: web-1's table changes, db-1's does not.
  publish::SnapshotBuilder::Result deny_web() {
    idx.apply(testing::upsert(
        testing::mk_policy("default", "deny-web",
                           R"({"action":"DENY","selector":{"matchLabels":{"app":"web"}},
                               "rules":[{}]})"),
        Kind::kPolicy));
    return publish();
  }
};

std::string etag(const publish::Snapshot& s, const std::string& pod) {
  return s.find("default", pod)->table->etag;
}

TEST_CASE("A waiter parks on a pod's current table and a publish that changes it wakes it") {
  Cluster c;
  const auto first = c.synced();
  server::WaitList list(first.snapshot);
  auto web = std::make_shared<CountingWaiter>();
  auto db = std::make_shared<CountingWaiter>();
  REQUIRE(list.park("default/web-1", etag(*first.snapshot, "web-1"), web));
  REQUIRE(list.park("default/db-1", etag(*first.snapshot, "db-1"), db));
  CHECK(list.parked() == 2);
  const auto next = c.deny_web();
  REQUIRE(next.changed_pods == std::vector<std::string>{"default/web-1"});
  list.publish(next.snapshot, next.changed_pods);
  CHECK(list.snapshot() == next.snapshot);
  CHECK(web->woken == 1);
  CHECK(db->woken == 0);  // its table did not change
  CHECK(list.parked() == 1);
  CHECK_FALSE(list.unpark("default/web-1", web.get()));  // already woken: not parked
}

TEST_CASE("Parking is refused when the table changed meanwhile, or the pod is unknown") {
  Cluster c;
  const auto first = c.synced();
  const std::string old_etag = etag(*first.snapshot, "web-1");
  server::WaitList list(c.deny_web().snapshot);
  auto w = std::make_shared<CountingWaiter>();
  CHECK_FALSE(list.park("default/web-1", old_etag, w));  // the client must be answered now
  CHECK_FALSE(list.park("default/nobody", old_etag, w));
  CHECK_FALSE(list.park("other/web-1", old_etag, w));
  CHECK(list.parked() == 0);
  CHECK(w->woken == 0);
}

TEST_CASE("Before the first sync nothing parks") {
  Cluster c;
  server::WaitList list(c.publish().snapshot);  // nothing listed yet
  CHECK_FALSE(list.park("default/web-1", "\"x\"", std::make_shared<CountingWaiter>()));
}

TEST_CASE("An unparked waiter is not woken, and unparking twice says it was not parked") {
  Cluster c;
  const auto first = c.synced();
  server::WaitList list(first.snapshot);
  auto w = std::make_shared<CountingWaiter>();
  REQUIRE(list.park("default/web-1", etag(*first.snapshot, "web-1"), w));
  CHECK(list.unpark("default/web-1", w.get()));
  CHECK_FALSE(list.unpark("default/web-1", w.get()));
  CHECK(list.parked() == 0);
  const auto next = c.deny_web();
  list.publish(next.snapshot, next.changed_pods);
  CHECK(w->woken == 0);
}

TEST_CASE("Shutdown wakes every waiter and refuses parking from then on") {
  Cluster c;
  const auto first = c.synced();
  server::WaitList list(first.snapshot);
  auto a = std::make_shared<CountingWaiter>();
  auto b = std::make_shared<CountingWaiter>();
  REQUIRE(list.park("default/web-1", etag(*first.snapshot, "web-1"), a));
  REQUIRE(list.park("default/web-1", etag(*first.snapshot, "web-1"), b));
  list.shutdown();
  CHECK(list.shutting_down());
  CHECK(a->woken == 1);
  CHECK(b->woken == 1);
  CHECK(list.parked() == 0);
  CHECK_FALSE(list.park("default/web-1", etag(*first.snapshot, "web-1"), a));
}

}  // namespace
}  // namespace tollgate
