// libFuzzer target: arbitrary bytes as a manifest file -> objects -> policies -> tables ->
// wire round trip -> decisions, and the same bytes as a table from the wire. Nothing may
// crash, throw, leak or trip a sanitizer; a table must survive its own wire format unchanged
// and decide the same afterwards, on requests that carry every attribute a predicate reads.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tollgate/compile/compile.h"
#include "tollgate/eval/evaluate.h"
#include "tollgate/lint/lint.h"
#include "tollgate/policy/parse.h"
#include "tollgate/source/manifests.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace tollgate;
  if (size > (1u << 16)) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // Untrusted table input: any JSON must be read or refused, never thrown on.
  const auto as_json = nlohmann::json::parse(text, nullptr, false);
  if (!as_json.is_discarded()) (void)compile::table_from_json(as_json);
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

  std::vector<const policy::Policy*> policies;
  for (const auto& p : state.policies) policies.push_back(&p);
  lint::Context in;
  in.policies = policies;
  in.workloads = state.workloads;
  in.services = state.services;
  in.service_accounts = &state.service_accounts;
  in.namespaces = &state.namespaces;
  const auto all = lint::lint_all(in);
  std::size_t one_by_one = 0;
  for (const auto* p : policies)
    one_by_one += p->findings.size() + lint::lint_policy(*p, in).size();
  if (one_by_one != all.size()) std::abort();  // lint_all is every policy's findings

  static const char* kRequests[] = {
      R"({"protocol":"http","source":{"principal":"cluster.local/ns/default/sa/frontend",)"
      R"("ip":"10.0.0.1"},"method":"GET","path":"/api/v1/data?x=1","host":"b.default",)"
      R"("port":80,"headers":{"x-token":"abc"},"requestPrincipal":"iss/sub",)"
      R"("jwtClaims":{"iss":"iss","sub":"sub","groups":["admin"]}})",
      R"({"protocol":"tcp","source":{"ip":"192.168.1.1"},"port":9000})",
      R"({"source":{"principal":"td/ns/default/sa/x","ip":"2001:db8::1","remoteIp":)"
      R"("::ffff:10.0.0.1"},"destinationIp":"10.0.0.9","method":"POST","path":"/a/b/c",)"
      R"("host":"API.example:8080","port":8080,"sni":"s.example","headers":{"x-a":["1","2"]},)"
      R"("requestPrincipal":"https://i.example/team/bob","jwtClaims":{"sub":"team/bob",)"
      R"("aud":["a"],"azp":"p","scope":"read write","n":{"k":"v"}},)"
      R"("dynamicMetadata":{"envoy.filters.f":{"k":["v"]}},"extAuthzDecision":"DENY"})",
  };
  for (const char* rq : kRequests) {
    auto req = eval::parse_request(nlohmann::json::parse(rq));
    if (!req.ok()) std::abort();
    eval::PreparedRequest p1, p2;
    eval::prepare(*req, table.path_normalization, p1);
    eval::prepare(*req, back->path_normalization, p2);
    const auto d1 = eval::evaluate(table, p1);
    const auto d2 = eval::evaluate(*back, p2);
    // The pulled table decides the same, by the same rule.
    if (d1.allowed != d2.allowed || (d1.rule == nullptr) != (d2.rule == nullptr)) std::abort();
    if (d1.rule != nullptr && d1.rule->name != d2.rule->name) std::abort();
    (void)eval::decision_json(table, d1, p1);
  }
  return 0;
}
