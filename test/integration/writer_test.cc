// The status writer and the Event recorder in process, against the fake API server: what
// they do with 429, 5xx and dropped answers, leadership toggled under them, and the
// per-object rate limit on Events (src/status/writer.cc, src/status/events.cc).
#include <catch2/catch.hpp>

#include <thread>

#include "support/controller.h"
#include "tollgate/k8s/config.h"
#include "tollgate/k8s/transport.h"
#include "tollgate/status/events.h"
#include "tollgate/status/writer.h"

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::deadline;
using testing::FakeApiServer;
using testing::kPolicies;

std::unique_ptr<k8s::Transport> transport_to(const FakeApiServer& api) {
  k8s::ClusterConfig c;
  c.server = api.url();
  auto parsed = k8s::parse_server(c);
  REQUIRE(parsed.ok());
  auto t = k8s::make_transport(*parsed, std::make_shared<k8s::TokenSource>(*parsed));
  REQUIRE(t.ok());
  return std::move(*t);
}

// The policy as the watch would hand it to the writer.
index::Event seen(const FakeApiServer& api, const std::string& name) {
  index::Event e;
  e.kind = index::Kind::kPolicy;
  e.type = index::Event::Type::kUpsert;
  e.objects.emplace_back(index::policy_object(api.object(kPolicies, "default", name)));
  return e;
}

struct RunningWriter {
  explicit RunningWriter(const FakeApiServer& api) {
    status::WriterOptions o;
    o.backoff =
        util::Backoff(std::chrono::duration<double>(0.05), std::chrono::duration<double>(0.2));
    o.event_options.instance = "writer-test";
    writer = std::make_unique<status::StatusWriter>(o, transport_to(api));
    thread = std::thread([this] { writer->run(); });
  }
  ~RunningWriter() {
    writer->stop();
    thread.join();
  }
  std::unique_ptr<status::StatusWriter> writer;
  std::thread thread;
};

TEST_CASE("429, 500 and a dropped answer are retried with backoff until the write lands") {
  FakeApiServer api;
  testing::add_cluster_collections(api);
  api.upsert(kPolicies, testing::allow_policy("allow"));
  api.inject_write(kPolicies, FakeApiServer::Fault::kHttp429);
  api.inject_write(kPolicies, FakeApiServer::Fault::kHttp500);
  api.inject_write(kPolicies, FakeApiServer::Fault::kDropBeforeResponse);
  RunningWriter w(api);
  w.writer->set_leading(true);
  w.writer->submit(seen(api, "allow"));
  REQUIRE(testing::wait_for_status_writes(api, "allow", 1, deadline(30s)));
  const auto writes = testing::status_writes(api.writes(), "allow");
  REQUIRE(writes.size() == 4);
  CHECK(writes[0].status == 429);
  CHECK(writes[1].status == 500);
  CHECK(writes[2].status == 0);  // dropped without an answer: the transport sends it again
  CHECK(writes[3].status == 200);
  // The writer counts once it has read the answer.
  REQUIRE(testing::eventually([&] { return w.writer->stats().ok == 1; }, deadline(30s)));
  CHECK(w.writer->stats().error == 2);
  CHECK(testing::conditions_of(api, "allow").size() == 2);
  CHECK_THAT(w.writer->metrics(),
             Catch::Contains("tollgate_status_writes_total{result=\"error\"} 2"));
}

TEST_CASE("a 422 is counted and not retried until the object changes") {
  FakeApiServer api;
  testing::add_cluster_collections(api);
  api.upsert(kPolicies, testing::allow_policy("allow"));
  api.upsert(kPolicies, testing::allow_policy("sentinel"));
  api.inject_write(kPolicies, FakeApiServer::Fault::kHttp422);
  RunningWriter w(api);
  w.writer->set_leading(true);
  w.writer->submit(seen(api, "allow"));
  w.writer->submit(seen(api, "sentinel"));  // written after "allow" (key order)
  REQUIRE(testing::wait_for_status_writes(api, "sentinel", 1, deadline(30s)));
  REQUIRE(testing::eventually([&] { return w.writer->stats().invalid == 1; }, deadline(30s)));
  auto writes = testing::status_writes(api.writes(), "allow");
  REQUIRE(writes.size() == 1);
  CHECK(writes[0].status == 422);
  // The same object again (a relist): still not retried. A change to it: written.
  w.writer->submit(seen(api, "allow"));
  json edited = api.object(kPolicies, "default", "sentinel");
  edited["spec"]["selector"]["matchLabels"]["app"] = "other";
  api.upsert(kPolicies, edited);
  w.writer->submit(seen(api, "sentinel"));
  REQUIRE(testing::wait_for_status_writes(api, "sentinel", 2, deadline(30s)));
  CHECK(testing::status_writes(api, "allow") == 1);
  json o = api.object(kPolicies, "default", "allow");
  o["metadata"]["labels"] = {{"fixed", "yes"}};
  api.upsert(kPolicies, o);
  w.writer->submit(seen(api, "allow"));
  REQUIRE(testing::wait_for_status_writes(api, "allow", 1, deadline(30s)));
  writes = testing::status_writes(api.writes(), "allow");
  REQUIRE(writes.size() == 2);
  CHECK(writes[1].status == 200);
  CHECK(w.writer->stats().invalid == 1);
}

TEST_CASE("a follower writes nothing; on becoming leader it writes what changed meanwhile") {
  FakeApiServer api;
  testing::add_cluster_collections(api);
  api.upsert(kPolicies, testing::allow_policy("a"));
  api.upsert(kPolicies, testing::allow_policy("b"));
  RunningWriter w(api);
  w.writer->submit(seen(api, "a"));
  w.writer->submit(seen(api, "b"));
  // Not leading: nothing is written.
  w.writer->set_leading(false);
  CHECK(api.writes().empty());
  w.writer->set_leading(true);
  REQUIRE(testing::wait_for_status_writes(api, "a", 1, deadline(30s)));
  REQUIRE(testing::wait_for_status_writes(api, "b", 1, deadline(30s)));
  // Demoted: set_leading(false) returns with no write in flight, and none follows.
  w.writer->set_leading(false);
  const auto before = api.writes().size();
  json edited = api.object(kPolicies, "default", "a");
  edited["spec"]["action"] = "MAYBE";
  api.upsert(kPolicies, edited);
  w.writer->submit(seen(api, "a"));
  std::this_thread::sleep_for(300ms);  // a window for a wrong write to show; none may
  CHECK(api.writes().size() == before);
  w.writer->set_leading(true);
  REQUIRE(testing::wait_for_status_writes(api, "a", 2, deadline(30s)));
  CHECK(testing::conditions_of(api, "a")["tollgate.dev/Accepted"]["status"] == "False");
  CHECK(testing::status_writes(api, "b") == 1);
}

TEST_CASE("Events: a repeat bumps count; the bucket lets 25 through per object, then limits") {
  FakeApiServer api;
  testing::add_cluster_collections(api);
  auto t = transport_to(api);
  status::EventOptions o;
  o.instance = "pod-1";
  status::EventRecorder recorder(*t, o);
  const status::InvolvedObject object{"security.istio.io/v1", "AuthorizationPolicy", "default", "p",
                                      "uid-p"};
  const auto now = std::chrono::system_clock::now();
  auto mono = std::chrono::steady_clock::now();
  using Outcome = status::EventRecorder::Outcome;
  CHECK(recorder.record(object, "Warning", "Invalid", "bad", now, mono) == Outcome::kCreated);
  CHECK(recorder.record(object, "Warning", "Invalid", "bad", now + 1s, mono) == Outcome::kPatched);
  CHECK(recorder.record(object, "Normal", "Compiled", "fine", now + 2s, mono) == Outcome::kCreated);
  auto events = api.objects(testing::kEvents);
  REQUIRE(events.size() == 2);
  for (const auto& e : events) {
    CHECK(e["count"] == (e["type"] == "Warning" ? 2 : 1));
    CHECK(e["involvedObject"]["uid"] == "uid-p");
    CHECK(e["reportingInstance"] == "pod-1");
  }
  int limited = 0;
  for (int i = 0; i < 30; ++i) {
    limited += recorder.record(object, "Warning", "Invalid", "bad", now, mono) == Outcome::kLimited;
  }
  CHECK(limited == 30 - (25 - 3));
  // Another object has its own bucket; five minutes later this one has a token again.
  const status::InvolvedObject other{"security.istio.io/v1", "AuthorizationPolicy", "default", "q",
                                     "uid-q"};
  CHECK(recorder.record(other, "Warning", "Invalid", "bad", now, mono) == Outcome::kCreated);
  mono += 301s;
  CHECK(recorder.record(object, "Warning", "Invalid", "bad", now, mono) == Outcome::kPatched);
  // An Event deleted meanwhile (TTL): the repeat creates a new one.
  api.remove(testing::kEvents, "default", api.objects(testing::kEvents)[0]["metadata"]["name"]);
  mono += 301s;
  const auto again = recorder.record(object, "Warning", "Invalid", "bad", now, mono);
  CHECK((again == Outcome::kPatched || again == Outcome::kCreated));
  CHECK(recorder.stats().limited == static_cast<std::uint64_t>(limited));
}

}  // namespace
}  // namespace tollgate
