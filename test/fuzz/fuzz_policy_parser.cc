// libFuzzer target: arbitrary bytes as a manifest file -> objects -> policies -> tables ->
// wire round trip -> decisions. Nothing may crash, leak or trip a sanitizer, and a table
// must survive its own wire format unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tollgate/compile/compile.h"
#include "tollgate/compile/lint.h"
#include "tollgate/eval/evaluate.h"
#include "tollgate/policy/parse.h"
#include "tollgate/source/manifests.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace tollgate;
  if (size > (1u << 16)) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto objects = source::read_text(text, "fuzz");
  if (!objects.ok()) return 0;
  source::ClusterState state;
  source::add_objects(state, std::move(*objects));
  policy::Workload w;
  w.namespace_ = "default";
  w.labels = {{"app", "backend"}};
  policy::MeshConfig mesh;
  const auto table = compile::compile_table(state.policies, w, mesh);
  const auto wire = compile::to_json(table);
  auto back = compile::table_from_json(wire);
  if (!back.ok() || compile::to_json(*back) != wire) std::abort();  // round trip must hold

  compile::LintInput in;
  in.policies = state.policies;
  in.workloads = state.workloads;
  in.services = state.services;
  in.service_accounts = &state.service_accounts;
  in.namespaces = &state.namespaces;
  (void)compile::lint(in);

  static const char* kRequests[] = {
      R"({"protocol":"http","source":{"principal":"cluster.local/ns/default/sa/frontend",)"
      R"("ip":"10.0.0.1"},"method":"GET","path":"/api/v1/data?x=1","host":"b.default",)"
      R"("port":80,"headers":{"x-token":"abc"},"requestPrincipal":"iss/sub",)"
      R"("jwtClaims":{"iss":"iss","sub":"sub","groups":["admin"]}})",
      R"({"protocol":"tcp","source":{"ip":"192.168.1.1"},"port":9000})",
  };
  for (const char* rq : kRequests) {
    auto req = eval::parse_request(nlohmann::json::parse(rq));
    if (!req.ok()) std::abort();
    eval::PreparedRequest p1, p2;
    eval::prepare(*req, table.path_normalization, p1);
    eval::prepare(*req, back->path_normalization, p2);
    const auto d1 = eval::evaluate(table, p1);
    const auto d2 = eval::evaluate(*back, p2);
    if (d1.allowed != d2.allowed) std::abort();  // the pulled table decides the same
    (void)eval::decision_json(table, d1, p1);
  }
  return 0;
}
