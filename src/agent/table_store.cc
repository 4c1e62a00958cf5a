#include "tollgate/agent/table_store.h"

#include <filesystem>

#include "tollgate/compile/compile.h"
#include "tollgate/util/file.h"

namespace tollgate::agent {
namespace {

using nlohmann::json;

constexpr const char* kKind = "AgentState";

std::string state_path(const std::string& dir) {
  return (std::filesystem::path(dir) / kStateFile).string();
}

}  // namespace

util::Status save_table(const std::string& dir, const PersistedTable& t) {
  const json state = {{"apiVersion", compile::kTableApiVersion},
                      {"kind", kKind},
                      {"namespace", t.namespace_},
                      {"pod", t.pod},
                      {"etag", t.etag},
                      {"syncedAt", t.synced_at},
                      {"table", t.table}};
  return util::write_file_atomically(state_path(dir),
                                     state.dump(-1, ' ', false, json::error_handler_t::replace));
}

util::Result<RestoredTable> load_table(const std::string& dir, std::string_view ns,
                                       std::string_view pod) {
  const std::string path = state_path(dir);
  TOLLGATE_TRY(text, util::read_file(path, kMaxStateBytes));
  auto fail = [&path](const std::string& why) { return util::make_error(path + ": " + why); };
  const json state = json::parse(text, nullptr, false);
  if (state.is_discarded() || !state.is_object()) return fail("not JSON");
  auto str = [&state](const char* key) {
    auto it = state.find(key);
    return it != state.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (str("kind") != kKind || str("apiVersion") != compile::kTableApiVersion) {
    return fail(std::string("not a tollgate agent state file (kind ") + kKind + ", apiVersion " +
                compile::kTableApiVersion + ")");
  }
  RestoredTable r;
  r.persisted.namespace_ = str("namespace");
  r.persisted.pod = str("pod");
  r.persisted.etag = str("etag");
  r.persisted.synced_at = str("syncedAt");
  if (r.persisted.namespace_ != ns || r.persisted.pod != pod) {
    return fail("saved for pod " + r.persisted.namespace_ + "/" + r.persisted.pod + ", not " +
                std::string(ns) + "/" + std::string(pod));
  }
  auto table_it = state.find("table");
  if (table_it == state.end()) return fail("has no table");
  auto table = compile::table_from_json(*table_it);
  if (!table.ok()) return fail(table.error().message);
  r.persisted.table = *table_it;
  r.table = std::move(*table);
  return r;
}

}  // namespace tollgate::agent
