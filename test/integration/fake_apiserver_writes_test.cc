// The fake API server's write semantics, selectors, discovery, write log, hooks and outages,
// driven through the controller's own transport (tollgate::k8s::Transport).
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "test/support/fake_apiserver.h"
#include "tollgate/k8s/config.h"
#include "tollgate/k8s/transport.h"

namespace {

using json = nlohmann::json;
using tollgate::testing::FakeApiServer;
using Fault = FakeApiServer::Fault;
using Write = FakeApiServer::Write;
namespace k8s = tollgate::k8s;

constexpr const char* kPolicies = "/apis/security.istio.io/v1/authorizationpolicies";
constexpr const char* kPods = "/api/v1/pods";
constexpr const char* kEvents = "/api/v1/events";
constexpr const char* kNamespaces = "/api/v1/namespaces";
const std::string kNsPolicies = "/apis/security.istio.io/v1/namespaces/ns/authorizationpolicies";
const std::string kMerge = "application/merge-patch+json";

std::unique_ptr<k8s::Transport> transport_to(const FakeApiServer& server,
                                             const std::string& token = "") {
  k8s::ClusterConfig c;
  c.server = server.url();
  c.token = token;
  auto parsed = k8s::parse_server(c);
  REQUIRE(parsed.ok());
  auto t = k8s::make_transport(*parsed, std::make_shared<k8s::TokenSource>(*parsed));
  REQUIRE(t.ok());
  return std::move(*t);
}

k8s::Call make_call(const std::string& method, const std::string& target,
                    const std::string& body = "",
                    const std::string& content_type = "application/json") {
  k8s::Call call;
  call.method = method;
  call.target = target;
  call.body = body;
  call.content_type = content_type;
  return call;
}

struct Reply {
  int status = 0;
  json body;
  std::string retry_after;
  std::string error;  // transport error (no answer)
};

json policy(const std::string& name, const std::string& action = "DENY") {
  return {{"apiVersion", "security.istio.io/v1"},
          {"kind", "AuthorizationPolicy"},
          {"metadata", {{"name", name}, {"namespace", "ns"}}},
          {"spec", {{"action", action}}}};
}

struct Api {
  Api() {
    server.add_collection(kPolicies, "AuthorizationPolicyList", "security.istio.io/v1", true);
    server.set_status_subresource(kPolicies, true);
    server.add_collection(kPods, "PodList", "v1", false);
    server.add_collection(kEvents, "EventList", "v1", false);
    server.add_collection(kNamespaces, "NamespaceList", "v1", false);
    client = transport_to(server);
  }

  Reply send(const std::string& method, const std::string& target, const std::string& body = "",
             const std::string& content_type = "application/json") {
    auto r = client->send(make_call(method, target, body, content_type));
    Reply out;
    if (!r.ok()) {
      out.error = r.error().message;
      client = transport_to(server);  // the connection is gone
      return out;
    }
    out.status = r->status;
    out.body = json::parse(r->body, nullptr, false);
    out.retry_after = r->header("retry-after");
    return out;
  }
  Reply get(const std::string& target) { return send("GET", target); }
  Reply create(const json& object) { return send("POST", kNsPolicies, object.dump()); }
  Reply put(const std::string& name, const json& object, const std::string& sub = "") {
    return send("PUT", kNsPolicies + "/" + name + sub, object.dump());
  }
  Reply patch(const std::string& name, const json& patch, const std::string& sub = "",
              const std::string& type = kMerge) {
    return send("PATCH", kNsPolicies + "/" + name + sub, patch.dump(), type);
  }

  FakeApiServer server;
  std::unique_ptr<k8s::Transport> client;
};

std::string rv_of(const json& object) { return object["metadata"]["resourceVersion"]; }

void check_status(const Reply& r, int code, const std::string& reason) {
  INFO(r.body.dump());
  REQUIRE(r.status == code);
  CHECK(r.body["kind"] == "Status");
  CHECK(r.body["apiVersion"] == "v1");
  CHECK(r.body["status"] == "Failure");
  CHECK(r.body["reason"] == reason);
  CHECK(r.body["code"] == code);
}

// A watch on its own transport and thread; events are queued as they arrive.
class Watch {
 public:
  Watch(const FakeApiServer& server, const std::string& target) : t_(transport_to(server)) {
    thread_ = std::thread([this, target] {
      auto r = t_->stream(target, std::chrono::seconds(30), 1 << 20, [this](std::string_view line) {
        {
          std::lock_guard lock(mu_);
          lines_.emplace_back(line);
        }
        cv_.notify_all();
        return true;
      });
      {
        std::lock_guard lock(mu_);
        ended_ = true;
      }
      cv_.notify_all();
    });
  }
  ~Watch() {
    t_->cancel();
    thread_.join();
  }
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  // The next event, or nullopt if none arrives within `timeout_seconds` or the watch ended.
  std::optional<json> next(double timeout_seconds = 5) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::duration<double>(timeout_seconds),
                 [&] { return !lines_.empty() || ended_; });
    if (lines_.empty()) return std::nullopt;
    json e = json::parse(lines_.front());
    lines_.pop_front();
    return e;
  }
  bool wait_ended(double timeout_seconds = 5) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::duration<double>(timeout_seconds),
                        [&] { return ended_; });
  }

 private:
  std::unique_ptr<k8s::Transport> t_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> lines_;
  bool ended_ = false;
  std::thread thread_;
};

}  // namespace

TEST_CASE("GET of an object answers it with kind and apiVersion, or a NotFound Status") {
  Api api;
  api.server.upsert(kPolicies, policy("p"));
  const Reply r = api.get(kNsPolicies + "/p");
  REQUIRE(r.status == 200);
  CHECK(r.body["kind"] == "AuthorizationPolicy");
  CHECK(r.body["apiVersion"] == "security.istio.io/v1");
  CHECK(r.body["metadata"]["name"] == "p");
  CHECK(r.body["metadata"]["generation"] == 1);  // upsert manages it with a status subresource

  const Reply missing = api.get(kNsPolicies + "/nope");
  check_status(missing, 404, "NotFound");
  CHECK(missing.body["message"] == "authorizationpolicies.security.istio.io \"nope\" not found");
  CHECK(missing.body["details"] ==
        json{{"name", "nope"}, {"group", "security.istio.io"}, {"kind", "authorizationpolicies"}});
  const Reply pod = api.get("/api/v1/namespaces/ns/pods/nope");
  check_status(pod, 404, "NotFound");
  CHECK(pod.body["message"] == "pods \"nope\" not found");
  CHECK(pod.body["details"] == json{{"name", "nope"}, {"kind", "pods"}});
  // Another namespace's object is not there.
  check_status(api.get("/apis/security.istio.io/v1/namespaces/other/authorizationpolicies/p"), 404,
               "NotFound");
}

TEST_CASE("POST creates with the server's metadata, and a second create is AlreadyExists") {
  Api api;
  json body = policy("p");
  body["metadata"]["uid"] = "client-uid";  // the server's to set
  body["status"] = {{"ready", true}};      // a create sets no status (status subresource)
  const Reply r = api.create(body);
  INFO(r.body.dump());
  REQUIRE(r.status == 201);
  const json& meta = r.body["metadata"];
  CHECK(r.body["kind"] == "AuthorizationPolicy");
  CHECK(meta["namespace"] == "ns");
  CHECK(meta["uid"].get<std::string>().rfind("fake-uid-", 0) == 0);
  CHECK(meta["generation"] == 1);
  CHECK(rv_of(r.body) == api.server.resource_version());
  CHECK(std::regex_match(meta["creationTimestamp"].get<std::string>(),
                         std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  CHECK_FALSE(r.body.contains("status"));
  CHECK(api.server.object(kPolicies, "ns", "p") == r.body);

  const Reply again = api.create(policy("p"));
  check_status(again, 409, "AlreadyExists");
  CHECK(again.body["message"] == "authorizationpolicies.security.istio.io \"p\" already exists");
  CHECK(again.body["details"]["name"] == "p");

  SECTION("the namespace must be the path's, and is filled when absent") {
    json other = policy("q");
    other["metadata"]["namespace"] = "other";
    check_status(api.create(other), 400, "BadRequest");
    json none = policy("q");
    none["metadata"].erase("namespace");
    const Reply filled = api.create(none);
    REQUIRE(filled.status == 201);
    CHECK(filled.body["metadata"]["namespace"] == "ns");
  }
  SECTION("generateName appends five random characters") {
    json generated = policy("");
    generated["metadata"].erase("name");
    generated["metadata"]["generateName"] = "gen-";
    const Reply g = api.create(generated);
    REQUIRE(g.status == 201);
    const std::string name = g.body["metadata"]["name"];
    CHECK(std::regex_match(name, std::regex("gen-[a-z0-9]{5}")));
    CHECK(api.server.writes().back().name == name);
    json nameless = policy("");
    nameless["metadata"].erase("name");
    check_status(api.create(nameless), 422, "Invalid");
  }
  SECTION("a cluster-scoped object is created at its collection's path") {
    const Reply ns = api.send("POST", kNamespaces, json{{"metadata", {{"name", "team"}}}}.dump());
    REQUIRE(ns.status == 201);
    CHECK_FALSE(ns.body["metadata"].contains("namespace"));
    CHECK(api.get("/api/v1/namespaces/team").status == 200);
    CHECK(api.send("DELETE", "/api/v1/namespaces/team").status == 200);
    check_status(api.get("/api/v1/namespaces/team"), 404, "NotFound");
  }
  SECTION("a namespaced collection takes no create at its all-namespaces path") {
    check_status(api.send("POST", kPolicies, policy("q").dump()), 405, "MethodNotAllowed");
  }
}

TEST_CASE("PUT replaces the object, preserving uid and creationTimestamp; 404 when absent") {
  Api api;
  const json created = api.create(policy("p")).body;
  json update = created;
  update["spec"] = {{"action", "ALLOW"}};
  update["metadata"]["uid"] = "other";
  update["metadata"]["creationTimestamp"] = "2000-01-01T00:00:00Z";
  const Reply r = api.put("p", update);
  REQUIRE(r.status == 200);
  CHECK(r.body["spec"]["action"] == "ALLOW");
  CHECK(r.body["metadata"]["uid"] == created["metadata"]["uid"]);
  CHECK(r.body["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]);
  CHECK(std::stoull(rv_of(r.body)) > std::stoull(rv_of(created)));
  CHECK(r.body["metadata"]["generation"] == 2);

  check_status(api.put("absent", policy("absent")), 404, "NotFound");
  json renamed = r.body;
  renamed["metadata"]["name"] = "q";
  check_status(api.put("p", renamed), 400, "BadRequest");
  check_status(api.send("PUT", kNsPolicies + "/p", "{not json"), 400, "BadRequest");
}

TEST_CASE("A stale resourceVersion in a PUT or a PATCH is a 409 Conflict") {
  Api api;
  const json created = api.create(policy("p")).body;
  api.server.upsert(kPolicies, policy("p", "AUDIT"));  // someone else's write
  const std::string message =
      "Operation cannot be fulfilled on authorizationpolicies.security.istio.io \"p\": the object "
      "has been modified; please apply your changes to the latest version and try again";

  json stale = created;
  stale["spec"]["action"] = "ALLOW";
  const Reply put = api.put("p", stale);
  check_status(put, 409, "Conflict");
  CHECK(put.body["message"] == message);
  CHECK(put.body["details"]["name"] == "p");

  const Reply patch =
      api.patch("p", {{"metadata", {{"resourceVersion", rv_of(created)}}}, {"spec", {{"x", 1}}}});
  check_status(patch, 409, "Conflict");
  CHECK(patch.body["message"] == message);
  CHECK(api.server.object(kPolicies, "ns", "p")["spec"] == json{{"action", "AUDIT"}});

  // The current resourceVersion passes; none at all is an unconditional write.
  const std::string current = rv_of(api.server.object(kPolicies, "ns", "p"));
  CHECK(
      api.patch("p", {{"metadata", {{"resourceVersion", current}}}, {"spec", {{"x", 1}}}}).status ==
      200);
  json unconditional = policy("p", "ALLOW");
  CHECK(api.put("p", unconditional).status == 200);
}

TEST_CASE("PATCH: merge, strategic merge (as merge), JSON patch; server-side apply is 415") {
  Api api;
  api.create(policy("p"));
  const Reply merged =
      api.patch("p", {{"spec", {{"action", nullptr}, {"rules", json::array({json::object()})}}}});
  REQUIRE(merged.status == 200);
  CHECK(merged.body["spec"] == json{{"rules", json::array({json::object()})}});

  const Reply strategic =
      api.patch("p", {{"spec", {{"action", "ALLOW"}, {"$setElementOrder/rules", json::array()}}}},
                "", "application/strategic-merge-patch+json");
  REQUIRE(strategic.status == 200);
  CHECK(strategic.body["spec"]["action"] == "ALLOW");
  CHECK_FALSE(strategic.body["spec"].contains("$setElementOrder/rules"));

  const Reply jsonpatch = api.patch(
      "p", json::array({{{"op", "replace"}, {"path", "/spec/action"}, {"value", "AUDIT"}}}), "",
      "application/json-patch+json");
  REQUIRE(jsonpatch.status == 200);
  CHECK(jsonpatch.body["spec"]["action"] == "AUDIT");
  check_status(
      api.patch("p", json::array({{{"op", "test"}, {"path", "/spec/action"}, {"value", "x"}}}), "",
                "application/json-patch+json"),
      422, "Invalid");

  check_status(api.patch("p", policy("p"), "", "application/apply-patch+yaml"), 415,
               "UnsupportedMediaType");
  check_status(api.patch("p", policy("p"), "", "application/json"), 415, "UnsupportedMediaType");
  check_status(api.patch("absent", {{"spec", {{"x", 1}}}}), 404, "NotFound");
}

TEST_CASE("With a status subresource the object ignores status and .../status ignores the rest") {
  Api api;
  const json created = api.create(policy("p")).body;
  REQUIRE(created["metadata"]["generation"] == 1);

  SECTION("status written to the object is ignored; labels do not bump the generation") {
    json update = created;
    update["status"] = {{"ready", true}};
    const Reply ignored = api.put("p", update);
    REQUIRE(ignored.status == 200);
    CHECK_FALSE(ignored.body.contains("status"));
    CHECK(rv_of(ignored.body) == rv_of(created));  // nothing changed: a no-op

    const Reply labelled = api.patch("p", {{"metadata", {{"labels", {{"a", "b"}}}}}});
    REQUIRE(labelled.status == 200);
    CHECK(labelled.body["metadata"]["labels"]["a"] == "b");
    CHECK(labelled.body["metadata"]["generation"] == 1);
    CHECK(rv_of(labelled.body) != rv_of(created));

    const Reply spec = api.patch("p", {{"spec", {{"action", "ALLOW"}}}});
    CHECK(spec.body["metadata"]["generation"] == 2);
  }
  SECTION(".../status changes only the status, without a generation bump") {
    json update = created;
    update["spec"] = {{"action", "ALLOW"}};
    update["metadata"]["labels"] = {{"a", "b"}};
    update["status"] = {{"conditions", json::array({{{"type", "Ready"}, {"status", "True"}}})}};
    const Reply r = api.put("p", update, "/status");
    REQUIRE(r.status == 200);
    CHECK(r.body["spec"] == json{{"action", "DENY"}});
    CHECK_FALSE(r.body["metadata"].contains("labels"));
    CHECK(r.body["status"] == update["status"]);
    CHECK(r.body["metadata"]["generation"] == 1);

    const Reply patched =
        api.patch("p", {{"status", {{"observedGeneration", 1}}}, {"spec", {}}}, "/status");
    REQUIRE(patched.status == 200);
    CHECK(patched.body["status"]["observedGeneration"] == 1);
    CHECK(patched.body["spec"] == json{{"action", "DENY"}});

    // A stale resourceVersion is still a precondition on .../status.
    json stale = update;
    stale["metadata"]["resourceVersion"] = rv_of(created);
    check_status(api.put("p", stale, "/status"), 409, "Conflict");

    // GET .../status answers the whole object; DELETE of it is not allowed.
    const Reply got = api.get(kNsPolicies + "/p/status");
    REQUIRE(got.status == 200);
    CHECK(got.body == api.server.object(kPolicies, "ns", "p"));
    check_status(api.send("DELETE", kNsPolicies + "/p/status"), 405, "MethodNotAllowed");
  }
  SECTION("without a status subresource .../status is 404 and status is written as any field") {
    json pod = {{"metadata", {{"name", "web"}, {"namespace", "ns"}}}, {"spec", json::object()}};
    REQUIRE(api.send("POST", "/api/v1/namespaces/ns/pods", pod.dump()).status == 201);
    pod["status"] = {{"phase", "Running"}};
    const Reply put = api.send("PUT", "/api/v1/namespaces/ns/pods/web", pod.dump());
    REQUIRE(put.status == 200);
    CHECK(put.body["status"]["phase"] == "Running");
    CHECK_FALSE(put.body["metadata"].contains("generation"));
    check_status(api.send("PUT", "/api/v1/namespaces/ns/pods/web/status", pod.dump()), 404,
                 "NotFound");
  }
}

TEST_CASE("upsert keeps the uid and bumps the generation only when the spec changes") {
  Api api;
  api.server.upsert(kPolicies, policy("p"));
  const json first = api.server.object(kPolicies, "ns", "p");
  CHECK(first["metadata"]["generation"] == 1);
  json labelled = policy("p");
  labelled["metadata"]["labels"] = {{"a", "b"}};
  labelled["status"] = {{"ready", true}};  // upsert stores what it is given
  api.server.upsert(kPolicies, labelled);
  const json second = api.server.object(kPolicies, "ns", "p");
  CHECK(second["metadata"]["generation"] == 1);
  CHECK(second["metadata"]["uid"] == first["metadata"]["uid"]);
  CHECK(second["status"]["ready"] == true);
  api.server.upsert(kPolicies, policy("p", "ALLOW"));
  CHECK(api.server.object(kPolicies, "ns", "p")["metadata"]["generation"] == 2);
  json explicit_generation = policy("p", "ALLOW");
  explicit_generation["metadata"]["generation"] = 7;
  api.server.upsert(kPolicies, explicit_generation);
  CHECK(api.server.object(kPolicies, "ns", "p")["metadata"]["generation"] == 7);
  CHECK(api.server.object(kPolicies, "ns", "absent").is_null());
}

TEST_CASE("Writes reach open watches; a no-op write bumps nothing and sends no event") {
  Api api;
  api.server.upsert(kPods, {{"metadata", {{"name", "sentinel"}, {"namespace", "ns"}}}});
  Watch watch(api.server,
              kNsPolicies + "?watch=1&resourceVersion=" + api.server.resource_version());
  REQUIRE(api.server.wait_for_watches(kPolicies, 1, 5));

  const Reply created = api.create(policy("p"));
  const Reply updated = api.patch("p", {{"spec", {{"action", "ALLOW"}}}});
  const std::string rv = api.server.resource_version();
  const Reply noop = api.patch("p", {{"spec", {{"action", "ALLOW"}}}});
  REQUIRE(noop.status == 200);
  CHECK(rv_of(noop.body) == rv_of(updated.body));
  CHECK(noop.body == updated.body);
  CHECK(api.server.resource_version() == rv);
  const Reply noop_put = api.put("p", updated.body);
  CHECK(rv_of(noop_put.body) == rv_of(updated.body));
  CHECK(api.server.resource_version() == rv);
  const Reply deleted = api.send("DELETE", kNsPolicies + "/p");
  REQUIRE(deleted.status == 200);
  CHECK(deleted.body["metadata"]["name"] == "p");
  CHECK(rv_of(deleted.body) == api.server.resource_version());

  const auto added = watch.next();
  REQUIRE(added);
  CHECK((*added)["type"] == "ADDED");
  CHECK((*added)["object"] == created.body);
  const auto modified = watch.next();
  REQUIRE(modified);
  CHECK((*modified)["type"] == "MODIFIED");
  CHECK((*modified)["object"] == updated.body);
  const auto gone = watch.next();  // nothing for the no-ops in between
  REQUIRE(gone);
  CHECK((*gone)["type"] == "DELETED");
  CHECK((*gone)["object"] == deleted.body);

  check_status(api.send("DELETE", kNsPolicies + "/p"), 404, "NotFound");
}

TEST_CASE("DELETE checks its preconditions") {
  Api api;
  const json created = api.create(policy("p")).body;
  const Reply wrong_uid =
      api.send("DELETE", kNsPolicies + "/p", json{{"preconditions", {{"uid", "other"}}}}.dump());
  check_status(wrong_uid, 409, "Conflict");
  CHECK_THAT(wrong_uid.body["message"].get<std::string>(),
             Catch::Contains("Precondition failed: UID in precondition: other"));
  check_status(api.send("DELETE", kNsPolicies + "/p",
                        json{{"preconditions", {{"resourceVersion", "1"}}}}.dump()),
               409, "Conflict");
  const Reply ok =
      api.send("DELETE", kNsPolicies + "/p",
               json{{"propagationPolicy", "Background"},
                    {"preconditions",
                     {{"uid", created["metadata"]["uid"]}, {"resourceVersion", rv_of(created)}}}}
                   .dump());
  CHECK(ok.status == 200);
  CHECK(api.server.object(kPolicies, "ns", "p").is_null());
}

TEST_CASE("The write log records every write as received and as answered") {
  FakeApiServer server;
  server.add_collection(kPolicies, "AuthorizationPolicyList", "security.istio.io/v1", true);
  server.set_status_subresource(kPolicies, true);
  server.set_bearer_token("secret");
  auto client = transport_to(server, "secret");
  const std::string body = policy("p").dump();
  REQUIRE(client->send(make_call("POST", kNsPolicies, body))->status == 201);
  REQUIRE(
      client->send(make_call("PATCH", kNsPolicies + "/p/status", R"({"status":{"a":1}})", kMerge))
          ->status == 200);
  REQUIRE(client->send(make_call("POST", kNsPolicies, body))->status == 409);
  REQUIRE(client->send(make_call("GET", kNsPolicies + "/p"))->status == 200);  // not a write

  const std::vector<Write> writes = server.writes();
  REQUIRE(writes.size() == 3);
  CHECK(writes[0].method == "POST");
  CHECK(writes[0].path == kPolicies);
  CHECK(writes[0].ns == "ns");
  CHECK(writes[0].name == "p");
  CHECK(writes[0].subresource.empty());
  CHECK(writes[0].content_type == "application/json");
  CHECK(writes[0].body == body);
  CHECK(writes[0].status == 201);
  CHECK(writes[0].authorization == "Bearer secret");
  CHECK(writes[1].method == "PATCH");
  CHECK(writes[1].subresource == "status");
  CHECK(writes[1].content_type == kMerge);
  CHECK(writes[1].status == 200);
  CHECK(writes[2].status == 409);
  // The requests log has them too.
  const auto requests = server.requests();
  REQUIRE(requests.size() == 4);
  CHECK(requests[1].method == "PATCH");
  CHECK(requests[1].target == kNsPolicies + "/p/status");
  CHECK(requests[2].status == 409);

  CHECK(server.wait_for_writes(
      [](const std::vector<Write>& w) { return w.size() == 3 && w[2].status == 409; }, 5));
  CHECK_FALSE(
      server.wait_for_writes([](const std::vector<Write>& w) { return w.size() > 3; }, 0.05));
  // A write on another thread wakes a waiter.
  auto other = transport_to(server, "secret");
  std::thread writer([&] { (void)other->send(make_call("DELETE", kNsPolicies + "/p")); });
  CHECK(server.wait_for_writes(
      [](const std::vector<Write>& w) {
        return w.size() == 4 && w[3].method == "DELETE" && w[3].status == 200;
      },
      10));
  writer.join();
}

TEST_CASE("The before_write hook races a write: its resourceVersion goes stale") {
  Api api;
  const json created = api.create(policy("p")).body;
  std::vector<Write> seen;  // written by the server's thread, read after the answer
  api.server.set_before_write([&](const Write& w) {
    seen.push_back(w);
    api.server.upsert(kPolicies, policy("p", "AUDIT"));  // the server's lock is not held
  });
  json update = created;
  update["spec"]["action"] = "ALLOW";
  check_status(api.put("p", update), 409, "Conflict");
  (void)api.server.writes();  // the server's lock orders the hook's push before this read
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].method == "PUT");
  CHECK(seen[0].name == "p");
  CHECK(seen[0].status == 0);
  api.server.set_before_write(nullptr);
  const json current = api.server.object(kPolicies, "ns", "p");
  CHECK(current["spec"]["action"] == "AUDIT");
  update["metadata"]["resourceVersion"] = rv_of(current);
  CHECK(api.put("p", update).status == 200);
  CHECK(seen.size() == 1);
  CHECK(api.server.writes().back().status == 200);
}

TEST_CASE("Injected write faults answer in order without applying the write") {
  Api api;
  api.server.inject_write(kPolicies, Fault::kHttp500);
  api.server.inject_write(kPolicies, Fault::kHttp429);
  check_status(api.create(policy("p")), 500, "InternalError");
  const Reply throttled = api.create(policy("p"));
  check_status(throttled, 429, "TooManyRequests");
  CHECK(throttled.retry_after == "1");
  CHECK(api.server.object(kPolicies, "ns", "p").is_null());
  CHECK(api.create(policy("p")).status == 201);

  // Reads are not affected by write faults, nor writes by read faults.
  api.server.inject_write(kPolicies, Fault::kHttp403);
  api.server.inject(kPolicies, Fault::kHttp500);
  CHECK(api.patch("p", {{"spec", {{"a", 1}}}}).status == 403);
  CHECK(api.patch("p", {{"spec", {{"a", 1}}}}).status == 200);
  CHECK(api.get(kPolicies).status == 500);

  // On a fresh connection, which the transport does not retry when it is dropped.
  api.client = transport_to(api.server);
  api.server.inject_write(kPolicies, Fault::kDropBeforeResponse);
  const Reply dropped = api.patch("p", {{"spec", {{"a", 2}}}});
  CHECK(dropped.status == 0);
  CHECK_FALSE(dropped.error.empty());
  CHECK(api.server.object(kPolicies, "ns", "p")["spec"]["a"] == 1);

  api.server.inject_write(kPolicies, Fault::kDropAfterWrite);
  const Reply lost = api.patch("p", {{"spec", {{"a", 3}}}});
  CHECK(lost.status == 0);
  CHECK(api.server.object(kPolicies, "ns", "p")["spec"]["a"] == 3);
  CHECK(api.server.writes().back().status == 0);

  CHECK_THROWS_AS(api.server.inject_write(kPolicies, Fault::kStall), std::invalid_argument);
}

TEST_CASE("set_unavailable answers every request but discovery, and ends open watches") {
  Api api;
  api.server.upsert(kPolicies, policy("p"));
  Watch watch(api.server, std::string(kPolicies) + "?watch=1");
  REQUIRE(watch.next());  // the synthetic ADDED: the watch is open
  api.server.set_unavailable(503);
  CHECK(watch.wait_ended());

  const Reply list = api.get(kPolicies);
  check_status(list, 503, "ServiceUnavailable");
  CHECK(list.retry_after == "1");
  check_status(api.create(policy("q")), 503, "ServiceUnavailable");
  check_status(api.get(std::string(kPolicies) + "?watch=1"), 503, "ServiceUnavailable");
  check_status(api.send("POST", "/apis/authentication.k8s.io/v1/tokenreviews", "{}"), 503,
               "ServiceUnavailable");
  CHECK(api.get("/version").status == 200);
  CHECK(api.get("/apis").status == 200);
  CHECK(api.server.writes().back().status == 503);
  CHECK(api.server.object(kPolicies, "ns", "q").is_null());

  api.server.set_unavailable(500);
  check_status(api.get(kPolicies + std::string("?limit=1")), 500, "InternalError");
  api.server.set_unavailable(0);
  CHECK(api.get(kPolicies).status == 200);
  CHECK(api.create(policy("q")).status == 201);
}

TEST_CASE("Field selectors filter lists and watches of events") {
  Api api;
  auto event = [](const std::string& name, const std::string& object, const std::string& type) {
    return json{{"metadata", {{"name", name}, {"namespace", "ns"}}},
                {"involvedObject",
                 {{"kind", "AuthorizationPolicy"}, {"name", object}, {"namespace", "ns"}}},
                {"type", type},
                {"reason", "Rejected"},
                {"count", 2}};
  };
  api.server.upsert(kEvents, event("e1", "p", "Warning"));
  api.server.upsert(kEvents, event("e2", "q", "Normal"));
  api.server.upsert(kEvents, event("e3", "p", "Normal"));
  auto names = [&](const std::string& query) {
    const Reply r = api.get("/api/v1/namespaces/ns/events?fieldSelector=" + query);
    REQUIRE(r.status == 200);
    std::vector<std::string> out;
    for (const json& item : r.body["items"]) out.push_back(item["metadata"]["name"]);
    return out;
  };
  using V = std::vector<std::string>;
  CHECK(names("involvedObject.name%3Dp") == V{"e1", "e3"});
  CHECK(names("involvedObject.name%3D%3Dp%2Ctype%3DNormal") == V{"e3"});
  CHECK(names("involvedObject.name!%3Dp") == V{"e2"});
  CHECK(names("involvedObject.kind%3DAuthorizationPolicy%2Cmetadata.namespace%3Dns") ==
        V{"e1", "e2", "e3"});
  CHECK(names("count%3D2%2Cmetadata.name%3De2") == V{"e2"});
  CHECK(names("involvedObject.uid%3D") == V{"e1", "e2", "e3"});  // absent is ""
  CHECK(names("metadata.name%3Dnone").empty());
  check_status(api.get("/api/v1/events?fieldSelector=nonsense"), 400, "BadRequest");

  // Pages of a selected list carry a continue token but no remainingItemCount.
  const Reply page = api.get("/api/v1/events?limit=1&fieldSelector=type%3DNormal");
  REQUIRE(page.body["items"].size() == 1);
  CHECK(page.body["metadata"].contains("continue"));
  CHECK_FALSE(page.body["metadata"].contains("remainingItemCount"));

  Watch watch(api.server,
              "/api/v1/namespaces/ns/events?watch=1&fieldSelector=involvedObject.name%3Dp");
  for (const char* name : {"e1", "e3"}) {  // the state, selected
    const auto e = watch.next();
    REQUIRE(e);
    CHECK((*e)["object"]["metadata"]["name"] == name);
  }
  REQUIRE(api.server.wait_for_watches(kEvents, 1, 5));
  api.server.upsert(kEvents, event("e4", "q", "Normal"));
  api.server.upsert(kEvents, event("e5", "p", "Normal"));
  const auto e = watch.next();
  REQUIRE(e);
  CHECK((*e)["type"] == "ADDED");
  CHECK((*e)["object"]["metadata"]["name"] == "e5");
}

TEST_CASE("A selected watch sees objects start and stop matching as ADDED and DELETED") {
  Api api;
  auto pod = [](const std::string& app) {
    return json{{"metadata", {{"name", "web"}, {"namespace", "ns"}, {"labels", {{"app", app}}}}}};
  };
  Watch watch(api.server, std::string(kPods) + "?watch=1&labelSelector=app%3Dweb&resourceVersion=" +
                              api.server.resource_version());
  REQUIRE(api.server.wait_for_watches(kPods, 1, 5));
  api.server.upsert(kPods, pod("web"));
  api.server.upsert(kPods, pod("web"));
  api.server.upsert(kPods, pod("db"));
  api.server.upsert(kPods, pod("db"));  // neither before nor after: nothing
  api.server.upsert(kPods, pod("web"));
  api.server.remove(kPods, "ns", "web");
  std::vector<std::string> types;
  for (int i = 0; i < 5; ++i) {
    const auto e = watch.next();
    REQUIRE(e);
    types.push_back((*e)["type"]);
    if ((*e)["type"] == "DELETED" && i == 2) {
      // The object as it last matched, at the event's resourceVersion.
      CHECK((*e)["object"]["metadata"]["labels"]["app"] == "web");
    }
  }
  CHECK(types == std::vector<std::string>{"ADDED", "MODIFIED", "DELETED", "ADDED", "DELETED"});

  // Label selectors on lists: equality, inequality, existence and sets.
  api.server.upsert(
      kPods, {{"metadata", {{"name", "a"}, {"namespace", "ns"}, {"labels", {{"app", "x"}}}}}});
  api.server.upsert(
      kPods, {{"metadata", {{"name", "b"}, {"namespace", "ns"}, {"labels", {{"tier", "y"}}}}}});
  auto count = [&](const std::string& selector) {
    return api.get(std::string(kPods) + "?labelSelector=" + selector).body["items"].size();
  };
  CHECK(count("app%3Dx") == 1);
  CHECK(count("app!%3Dx") == 1);
  CHECK(count("app") == 1);
  CHECK(count("!app") == 1);
  CHECK(count("app%20in%20(x%2Cz)") == 1);
  CHECK(count("app%20notin%20(x)") == 1);
  CHECK(count("app%2Ctier") == 0);
}

TEST_CASE("Discovery describes the registered collections for kubectl") {
  Api api;
  api.server.add_collection("/apis/security.istio.io/v1beta1/authorizationpolicies",
                            "AuthorizationPolicyList", "security.istio.io/v1beta1", true);
  const Reply version = api.get("/version");
  REQUIRE(version.status == 200);
  CHECK(version.body["gitVersion"] == "v1.32.0");
  CHECK(api.get("/api").body["versions"] == json::array({"v1"}));

  const json core = api.get("/api/v1").body;
  CHECK(core["kind"] == "APIResourceList");
  CHECK(core["groupVersion"] == "v1");
  bool saw_namespaces = false, saw_events = false;
  for (const json& r : core["resources"]) {
    if (r["name"] == "namespaces") {
      saw_namespaces = true;
      CHECK(r["namespaced"] == false);
      CHECK(r["kind"] == "Namespace");
    }
    if (r["name"] == "events") {
      saw_events = true;
      CHECK(r["namespaced"] == true);
      CHECK(r["shortNames"] == json::array({"ev"}));
      CHECK(r["singularName"] == "event");
    }
  }
  CHECK(saw_namespaces);
  CHECK(saw_events);

  const json groups = api.get("/apis").body;
  CHECK(groups["kind"] == "APIGroupList");
  REQUIRE(groups["groups"].size() == 1);
  CHECK(groups["groups"][0]["name"] == "security.istio.io");
  CHECK(groups["groups"][0]["preferredVersion"]["version"] == "v1");
  CHECK(groups["groups"][0]["versions"].size() == 2);

  const json istio = api.get("/apis/security.istio.io/v1").body;
  CHECK(istio["groupVersion"] == "security.istio.io/v1");
  REQUIRE(istio["resources"].size() == 2);
  CHECK(istio["resources"][0]["name"] == "authorizationpolicies");
  CHECK(istio["resources"][0]["kind"] == "AuthorizationPolicy");
  CHECK(istio["resources"][0]["shortNames"] == json::array({"ap"}));
  CHECK(istio["resources"][0]["verbs"].size() == 7);
  CHECK(istio["resources"][1]["name"] == "authorizationpolicies/status");
  CHECK(api.get("/apis/security.istio.io").body["kind"] == "APIGroup");
  check_status(api.get("/apis/other.io/v1"), 404, "NotFound");

  const json openapi = api.get("/openapi/v3").body;
  CHECK(openapi["paths"].contains("apis/security.istio.io/v1"));
  CHECK(api.get("/openapi/v3/apis/security.istio.io/v1").status == 200);
  CHECK(api.get("/openapi/v2").status == 404);
}
