// Leader election decisions (src/k8s/election.cc), with client-go's semantics.
#include "tollgate/k8s/election.h"

#include <catch2/catch.hpp>

using namespace tollgate;
using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

namespace {

k8s::ElectionConfig config(const std::string& id) {
  k8s::ElectionConfig c;
  c.identity = id;
  return c;
}

const auto kWall = std::chrono::system_clock::time_point(std::chrono::seconds(1796205600));

}  // namespace

TEST_CASE("with no lease, a candidate creates it as the holder") {
  k8s::Elector e(config("pod-a"));
  const auto r = e.next(std::nullopt, Steady::now(), kWall);
  REQUIRE(r);
  CHECK(r->holder == "pod-a");
  CHECK(r->lease_duration_seconds == 15);
  CHECK(r->transitions == 0);
  CHECK(r->acquire_time == "2026-12-02T10:00:00.000000Z");
  CHECK(r->renew_time == r->acquire_time);
}

TEST_CASE("another holder's lease is taken over only after it stayed unchanged for its duration") {
  k8s::Elector e(config("pod-b"));
  const k8s::LeaseRecord held{"pod-a", 15, "t0", "t0", 3};
  const auto t0 = Steady::now();
  CHECK_FALSE(e.next(held, t0, kWall));
  CHECK_FALSE(e.next(held, t0 + 14s, kWall));
  // The holder renewed: the wait starts again from when we saw the change.
  const k8s::LeaseRecord renewed{"pod-a", 15, "t0", "t14", 3};
  CHECK_FALSE(e.next(renewed, t0 + 14s, kWall));
  CHECK_FALSE(e.next(renewed, t0 + 28s, kWall));
  const auto taken = e.next(renewed, t0 + 29s, kWall + 29s);
  REQUIRE(taken);
  CHECK(taken->holder == "pod-b");
  CHECK(taken->transitions == 4);
  CHECK(taken->acquire_time == k8s::micro_time(kWall + 29s));
}

TEST_CASE("the holder renews keeping its acquire time and transitions; a released lease is free") {
  k8s::Elector e(config("pod-a"));
  const k8s::LeaseRecord mine{"pod-a", 15, "t0", "t1", 2};
  const auto r = e.next(mine, Steady::now(), kWall);
  REQUIRE(r);
  CHECK(r->acquire_time == "t0");
  CHECK(r->transitions == 2);
  CHECK(r->renew_time == k8s::micro_time(kWall));
  const auto released = e.release(mine, kWall);
  REQUIRE(released);
  CHECK(released->holder.empty());
  CHECK(released->transitions == 2);
  CHECK_FALSE(e.release({"pod-b", 15, "", "", 0}, kWall));  // not ours to release
  k8s::Elector other(config("pod-b"));
  const auto now = other.next(*released, Steady::now(), kWall);
  REQUIRE(now);  // an empty holder is taken at once
  CHECK(now->holder == "pod-b");
  CHECK(now->transitions == 3);
}

TEST_CASE("leadership lasts while renewals land within the renew deadline") {
  k8s::Elector e(config("pod-a"));
  const auto t0 = Steady::now();
  CHECK_FALSE(e.leading(t0));
  e.renewed(t0);
  CHECK(e.leading(t0 + 9s));
  CHECK_FALSE(e.leading(t0 + 10s));
  e.renewed(t0 + 8s);
  CHECK(e.leading(t0 + 17s));
  e.lost();
  CHECK_FALSE(e.leading(t0 + 8s));
}

TEST_CASE("a Lease reads back from its object; wrong types are errors naming the field") {
  const k8s::LeaseRecord rec{"pod-a", 15, "t0", "t1", 2};
  auto obj = k8s::lease_object("tollgate-system", "tollgate", rec, "");
  CHECK_FALSE(obj["metadata"].contains("resourceVersion"));
  obj["metadata"]["resourceVersion"] = "7";
  const auto r = k8s::parse_lease(obj);
  REQUIRE(r.ok());
  CHECK(r->record == rec);
  CHECK(r->resource_version == "7");
  obj["spec"]["leaseTransitions"] = "2";
  const auto bad = k8s::parse_lease(obj);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message == "lease: spec.leaseTransitions is not an integer");
  CHECK_FALSE(k8s::parse_lease(nlohmann::json{{"spec", nlohmann::json::object()}}).ok());
  // A fresh Lease (as kubectl creates one) has null fields.
  const auto fresh = k8s::parse_lease(
      {{"metadata", {{"resourceVersion", "1"}}}, {"spec", {{"holderIdentity", nullptr}}}});
  REQUIRE(fresh.ok());
  CHECK(fresh->record.holder.empty());
}
