// The agent's sync with the controller (src/agent/sync.cc) against a scripted controller on
// the HTTP core, in process: what each answer does to the active table, the saved file, the
// metrics and the status, and what the agent sends.
#include "tollgate/agent/sync.h"

#include <catch2/catch.hpp>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

#include "support/fixtures.h"
#include "support/run.h"
#include "tollgate/agent/table_store.h"
#include "tollgate/compile/compile.h"
#include "tollgate/http/server.h"
#include "tollgate/k8s/config.h"

using namespace tollgate;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

compile::DecisionTable table_of(const std::string& yaml) {
  return compile::compile_table(testing::mk_policies(yaml), testing::mk_workload("default"), {});
}

const char* kDenyAll = R"(
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: default}
spec: {action: DENY, rules: [{}]}
)";
const char* kAllowGet = R"(
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: default}
spec: {rules: [{to: [{operation: {methods: [GET]}}]}]}
)";

struct Scripted {
  int status = 200;
  std::string body;
  std::string etag;
  std::string synced_at = "2026-12-02T10:00:00.000Z";
};

Scripted table_answer(const compile::DecisionTable& t) {
  return {200, compile::to_json(t).dump(), "\"" + t.hash + "\""};
}

// A controller that answers from a script; with the script empty it parks the request until
// the test adds an answer (a long-poll) or the server shuts down (304).
class FakeController final : public http::Handler {
 public:
  struct Seen {
    std::string target, if_none_match, prefer, authorization;
  };

  http::HandlerOptions options() const override {
    http::HandlerOptions o;
    o.headers = {"if-none-match", "prefer", "authorization"};
    return o;
  }

  http::Answer handle(const http::Request& r, http::Exchange& x) override {
    {
      std::lock_guard lock(mu_);
      seen_.push_back({std::string(r.target), std::string(r.fields[0]), std::string(r.fields[1]),
                       std::string(r.fields[2])});
      cv_.notify_all();
      if (!script_.empty()) return http::Answer::now(pop_locked());
      waker_ = x.waker();
    }
    return http::Answer::defer(std::make_unique<Parked>(*this), http::Clock::now() + 60s);
  }
  void drain() override { push({304, "", "", ""}); }

  void push(Scripted s) {
    std::shared_ptr<http::Waker> w;
    {
      std::lock_guard lock(mu_);
      script_.push_back(std::move(s));
      w = std::move(waker_);
    }
    if (w) w->wake();
  }
  std::vector<Seen> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }
  // Waits until `n` requests have arrived.
  bool wait_for_requests(std::size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 60s, [&] { return seen_.size() >= n; });
  }

 private:
  struct Parked final : http::Deferred {
    explicit Parked(FakeController& owner) : c(owner) {}
    std::optional<http::Response> resume(bool timed_out) override {
      std::lock_guard lock(c.mu_);
      if (c.script_.empty()) {
        if (!timed_out) return std::nullopt;
        http::Response r;
        r.status = 304;
        return r;
      }
      return c.pop_locked();
    }
    void cancel() override {}
    FakeController& c;
  };

  http::Response pop_locked() {
    Scripted s = std::move(script_.front());
    script_.pop_front();
    http::Response r;
    r.status = s.status;
    r.body = std::move(s.body);
    if (!s.etag.empty()) r.headers += "ETag: " + s.etag + "\r\n";
    if (!s.synced_at.empty()) r.headers += "X-Tollgate-Synced-At: " + s.synced_at + "\r\n";
    return r;
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Scripted> script_;
  std::vector<Seen> seen_;
  std::shared_ptr<http::Waker> waker_;
};

struct Rig {
  FakeController controller;
  http::Server server{[] {
                        http::ServerOptions o;
                        o.listen = "127.0.0.1:0";
                        o.threads = 1;
                        return o;
                      }(),
                      controller};
  testing::TempDir dir;
  agent::Authorizer authorizer;
  agent::AgentMetrics metrics;
  std::unique_ptr<agent::Syncer> syncer;

  explicit Rig(const std::string& token_file = "", bool listen = true) {
    std::uint16_t port = 1;  // nothing listens on port 1: unreachable
    if (listen) {
      REQUIRE(server.start().ok());
      port = server.port();
    }
    k8s::ClusterConfig c;
    c.server = "http://127.0.0.1:" + std::to_string(port);
    c.token_file = token_file;
    auto parsed = k8s::parse_server(c);
    REQUIRE(parsed.ok());
    auto tokens = token_file.empty() ? nullptr : std::make_shared<k8s::TokenSource>(*parsed);
    auto transport = k8s::make_transport(*parsed, tokens);
    REQUIRE(transport.ok());
    agent::SyncOptions so;
    so.namespace_ = "default";
    so.pod = "backend";
    so.state_dir = (dir.path() / "state").string();
    so.wait = 30s;
    so.backoff_initial = std::chrono::duration<double>(0.01);
    so.backoff_cap = std::chrono::duration<double>(0.05);
    std::filesystem::create_directories(so.state_dir);
    syncer = std::make_unique<agent::Syncer>(so, std::move(*transport), authorizer, metrics);
  }
  ~Rig() {
    syncer->stop();
    server.shutdown();
  }
  std::string state_dir() const { return (dir.path() / "state").string(); }
  std::string active_hash() const {
    auto a = authorizer.active();
    return a ? a->table.hash : "";
  }
};

// Polls `pred` until it holds or a generous deadline passes (another thread makes it true).
template <typename Pred>
bool eventually(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace

TEST_CASE(
    "a table from the controller is verified, activated, and saved where a restart finds it") {
  Rig rig;
  const auto t = table_of(kDenyAll);
  rig.controller.push(table_answer(t));
  REQUIRE(rig.syncer->sync_once(10s, false));
  CHECK(rig.active_hash() == t.hash);
  CHECK(rig.authorizer.active()->source == agent::ActiveTable::Source::kFetched);
  CHECK(rig.authorizer.active()->synced_at == "2026-12-02T10:00:00.000Z");
  auto saved = agent::load_table(rig.state_dir(), "default", "backend");
  REQUIRE(saved.ok());
  CHECK(saved->table.hash == t.hash);
  CHECK(saved->persisted.etag == "\"" + t.hash + "\"");
  const auto status = rig.syncer->status();
  CHECK(status.have_table);
  CHECK(status.controller_ok);
  CHECK_FALSE(status.restored);
  const auto seen = rig.controller.seen();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].target == "/v1/tables/default/backend");
  CHECK(seen[0].if_none_match.empty());
}

TEST_CASE("the next request asks for a change: If-None-Match, Prefer: wait, and the bearer token") {
  testing::TempDir tdir;
  const auto token = (tdir.path() / "token").string();
  testing::write_file(token, "tok-1\n");
  Rig rig(token);
  const auto t = table_of(kDenyAll);
  rig.controller.push(table_answer(t));
  REQUIRE(rig.syncer->sync_once(10s, false));
  rig.controller.push({304, "", "", "2026-12-02T10:05:00.000Z"});
  REQUIRE(rig.syncer->sync_once(10s, true));
  const auto seen = rig.controller.seen();
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].if_none_match == "\"" + t.hash + "\"");
  CHECK(seen[1].prefer == "wait=30");
  CHECK(seen[1].authorization == "Bearer tok-1");
  CHECK(rig.active_hash() == t.hash);  // a 304 keeps the table
  const std::string metrics = rig.metrics.render(rig.authorizer, std::chrono::system_clock::now());
  CHECK_THAT(metrics,
             Catch::Contains("tollgate_agent_table_updates_total{result=\"not_modified\"} 1"));
}

TEST_CASE("every kind of failure keeps the last good table and is counted by its kind") {
  Rig rig;
  const auto good = table_of(kDenyAll);
  rig.controller.push(table_answer(good));
  REQUIRE(rig.syncer->sync_once(10s, false));
  const auto other = table_of(kAllowGet);
  json tampered = compile::to_json(other);
  tampered["allow"] = json::array();  // content no longer matches its hash
  json wrong_version = compile::to_json(other);
  wrong_version["apiVersion"] = "tollgate.dev/v9";
  json no_hash = compile::to_json(other);
  no_hash.erase("hash");
  struct Case {
    Scripted answer;
    agent::SyncError kind;
  };
  const std::vector<Case> cases = {
      {{404, R"({"error":"no pod default/backend"})", "", ""}, agent::SyncError::kNotFound},
      {{503, R"({"error":"not synced"})", "", ""}, agent::SyncError::kUnavailable},
      {{500, "oops", "", ""}, agent::SyncError::kServerError},
      {{401, "", "", ""}, agent::SyncError::kRefused},
      {{403, R"({"error":"may read only its own pod's table"})", "", ""},
       agent::SyncError::kRefused},
      {{400, "", "", ""}, agent::SyncError::kUnexpected},
      {{200, "{\"apiVersion\": [", "\"x\"", ""}, agent::SyncError::kInvalidTable},
      {{200, tampered.dump(), "\"" + other.hash + "\"", ""}, agent::SyncError::kInvalidTable},
      {{200, wrong_version.dump(), "\"" + other.hash + "\"", ""}, agent::SyncError::kInvalidTable},
      {{200, no_hash.dump(), "\"" + other.hash + "\"", ""}, agent::SyncError::kInvalidTable},
      {{200, compile::to_json(other).dump(), "\"not-its-hash\"", ""},
       agent::SyncError::kInvalidTable},
  };
  std::map<agent::SyncError, std::uint64_t> expected;
  for (const auto& c : cases) {
    INFO("answer " << c.answer.status << " " << c.answer.body.substr(0, 60));
    rig.controller.push(c.answer);
    CHECK_FALSE(rig.syncer->sync_once(10s, false));
    CHECK(rig.active_hash() == good.hash);
    CHECK_FALSE(rig.syncer->status().controller_ok);
    ++expected[c.kind];
    CHECK(rig.metrics.sync_errors(c.kind) == expected[c.kind]);
  }
  CHECK_THAT(rig.syncer->status().last_error, Catch::Contains("ETag \"not-its-hash\""));
  auto saved = agent::load_table(rig.state_dir(), "default", "backend");
  REQUIRE(saved.ok());
  CHECK(saved->table.hash == good.hash);  // nothing that failed was written
}

TEST_CASE("with the controller unreachable at start, the saved table is restored and says so") {
  Rig rig("", /*listen=*/false);
  const auto t = table_of(kDenyAll);
  REQUIRE(agent::save_table(rig.state_dir(), {"default", "backend", "\"" + t.hash + "\"",
                                              "2026-12-02T09:00:00.000Z", compile::to_json(t)})
              .ok());
  CHECK_FALSE(rig.syncer->sync_once(2s, false));
  CHECK(rig.metrics.sync_errors(agent::SyncError::kUnreachable) == 1);
  REQUIRE(rig.syncer->restore());
  CHECK(rig.active_hash() == t.hash);
  CHECK(rig.authorizer.active()->source == agent::ActiveTable::Source::kRestored);
  const auto status = rig.syncer->status();
  CHECK(status.restored);
  CHECK_FALSE(status.controller_ok);
  const std::string metrics = rig.metrics.render(rig.authorizer, std::chrono::system_clock::now());
  CHECK_THAT(metrics, Catch::Contains("tollgate_agent_table_info{hash=\"" + t.hash +
                                      "\",source=\"restored\"} 1"));
  CHECK_FALSE(rig.syncer->restore());  // once a table is active, nothing is restored over it
}

TEST_CASE("a saved table that cannot be used is reported, and the agent goes on without it") {
  Rig rig("", /*listen=*/false);
  const std::string file = rig.state_dir() + "/" + agent::kStateFile;
  SECTION("corrupt") { testing::write_file(file, "{\"kind\":\"AgentState\",\"tab"); }
  SECTION("another pod's") {
    const auto t = table_of(kDenyAll);
    REQUIRE(agent::save_table(rig.state_dir(), {"default", "frontend", "\"" + t.hash + "\"", "",
                                                compile::to_json(t)})
                .ok());
  }
  SECTION("missing") {}
  CHECK_FALSE(rig.syncer->restore());
  CHECK(rig.authorizer.active() == nullptr);
  CHECK_THAT(rig.syncer->status().restore_error, Catch::StartsWith(file + ": "));
}

TEST_CASE("a state directory that cannot be written leaves the table active and counts it") {
  Rig rig;
  // A regular file where the directory should be: no write can succeed, even as root.
  std::filesystem::remove_all(rig.state_dir());
  testing::write_file(rig.state_dir(), "not a directory");
  const auto t = table_of(kDenyAll);
  rig.controller.push(table_answer(t));
  REQUIRE(rig.syncer->sync_once(10s, false));
  CHECK(rig.active_hash() == t.hash);
  CHECK(rig.metrics.sync_errors(agent::SyncError::kPersist) == 1);
}

TEST_CASE("the loop follows the controller: a long-poll answered with a new table activates it") {
  Rig rig;
  const auto first = table_of(kDenyAll);
  const auto second = table_of(kAllowGet);
  rig.controller.push({503, R"({"error":"not synced yet"})", "", ""});  // backs off, retries
  rig.controller.push(table_answer(first));
  rig.syncer->start();
  REQUIRE(eventually([&] { return rig.active_hash() == first.hash; }));
  REQUIRE(rig.controller.wait_for_requests(3));  // the third request is the parked long-poll
  rig.controller.push(table_answer(second));
  REQUIRE(eventually([&] { return rig.active_hash() == second.hash; }));
  CHECK(rig.metrics.sync_errors(agent::SyncError::kUnavailable) == 1);
  const auto seen = rig.controller.seen();
  CHECK(seen[2].if_none_match == "\"" + first.hash + "\"");
  CHECK(seen[2].prefer == "wait=30");
  rig.syncer->stop();  // ends the next parked long-poll
}

TEST_CASE("the loop restores the saved table when its first attempt fails") {
  Rig rig("", /*listen=*/false);
  const auto t = table_of(kDenyAll);
  REQUIRE(agent::save_table(rig.state_dir(),
                            {"default", "backend", "\"" + t.hash + "\"", "", compile::to_json(t)})
              .ok());
  rig.syncer->start();
  REQUIRE(eventually([&] { return rig.active_hash() == t.hash; }));
  CHECK(rig.syncer->status().restored);
  REQUIRE(eventually(
      [&] { return rig.metrics.sync_errors(agent::SyncError::kUnreachable) >= 2; }));  // retries
  CHECK(rig.active_hash() == t.hash);
}
