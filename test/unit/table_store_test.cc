#include "tollgate/agent/table_store.h"

#include <catch2/catch.hpp>
#include <filesystem>

#include "support/fixtures.h"
#include "support/run.h"
#include "tollgate/compile/compile.h"

using namespace tollgate;
using nlohmann::json;

namespace {

agent::PersistedTable sample() {
  const auto t = compile::compile_table(testing::mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: default}
spec: {action: DENY, rules: [{}]}
)"),
                                        testing::mk_workload("default"), {});
  return {"default", "backend", "\"" + t.hash + "\"", "2026-12-02T10:00:00.000Z",
          compile::to_json(t)};
}

}  // namespace

TEST_CASE("a saved table really lands and reads back verified, for the same pod only") {
  testing::TempDir dir;
  const auto saved = sample();
  REQUIRE(agent::save_table(dir.path().string(), saved).ok());
  REQUIRE(std::filesystem::exists(dir.path() / agent::kStateFile));
  auto r = agent::load_table(dir.path().string(), "default", "backend");
  REQUIRE(r.ok());
  CHECK(r->persisted.etag == saved.etag);
  CHECK(r->persisted.synced_at == saved.synced_at);
  CHECK(r->table.hash == saved.table["hash"]);
  CHECK(compile::to_json(r->table) == saved.table);
  auto other = agent::load_table(dir.path().string(), "default", "frontend");
  REQUIRE_FALSE(other.ok());
  CHECK_THAT(other.error().message,
             Catch::EndsWith("saved for pod default/backend, not default/frontend"));
}

TEST_CASE("a missing, corrupt, foreign or tampered state file is an error naming the file") {
  testing::TempDir dir;
  const std::string d = dir.path().string();
  const std::string file = (dir.path() / agent::kStateFile).string();
  auto error_of = [&] {
    auto r = agent::load_table(d, "default", "backend");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::StartsWith(file + ": "));
    return r.error().message;
  };
  CHECK_THAT(error_of(), Catch::Contains("No such file"));
  testing::write_file(file, "{\"kind\":\"AgentState\",");  // a torn write from elsewhere
  CHECK_THAT(error_of(), Catch::EndsWith("not JSON"));
  testing::write_file(file, R"({"kind":"Pod"})");
  CHECK_THAT(error_of(), Catch::Contains("not a tollgate agent state file"));
  auto tampered = sample();
  tampered.table["deny"] = json::array();  // the hash no longer matches
  REQUIRE(agent::save_table(d, tampered).ok());
  CHECK_THAT(error_of(), Catch::Contains("hash does not match"));
  auto wrong_type = sample();
  wrong_type.table["deny"][0]["rule"] = "zero";
  REQUIRE(agent::save_table(d, wrong_type).ok());
  CHECK_THAT(error_of(), Catch::Contains("deny[0].rule"));
}
