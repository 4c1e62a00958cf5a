// `tollgate check` and `tollgate lint` over manifest files.
#include <iostream>

#include "tollgate/app/commands.h"
#include "tollgate/compile/compile.h"
#include "tollgate/eval/evaluate.h"
#include "tollgate/lint/lint.h"
#include "tollgate/source/manifests.h"
#include "tollgate/util/file.h"

namespace tollgate::app {

using nlohmann::json;

// A request or mesh settings, not a cluster: a generous cap that still stops /dev/zero.
constexpr std::size_t kMaxArgumentFileBytes = std::size_t{64} << 20;

util::Result<json> json_arg(const std::string& text, const char* what) {
  std::string body = text;
  if (!text.empty() && text[0] == '@') {
    auto read = util::read_file(text.substr(1), kMaxArgumentFileBytes);
    if (!read.ok()) return util::make_error(std::string(what) + ": " + read.error().message);
    body = std::move(*read);
  }
  if (body.empty()) return json();
  try {
    return json::parse(body);
  } catch (const json::exception& e) {
    return util::make_error(std::string(what) + ": not valid JSON: " + e.what());
  }
}

namespace {

// "ns/pod" names a known workload; "ns/k=v,k2=v2/sa" describes one.
util::Result<policy::Workload> resolve_workload(const std::string& spec,
                                                const source::ClusterState& s) {
  auto slash = spec.find('/');
  if (slash == std::string::npos || slash == 0) {
    return util::make_error(
        "--workload: expected NAMESPACE/POD or NAMESPACE/LABELS/SERVICEACCOUNT");
  }
  const std::string ns = spec.substr(0, slash);
  const std::string rest = spec.substr(slash + 1);
  auto slash2 = rest.find('/');
  if (slash2 == std::string::npos && rest.find('=') == std::string::npos) {
    for (const auto& w : s.workloads) {
      if (w.namespace_ == ns && w.name == rest) return w;
    }
    return util::make_error("--workload: no workload " + spec + " in the manifests");
  }
  policy::Workload w;
  w.namespace_ = ns;
  const std::string labels = rest.substr(0, slash2);
  if (slash2 != std::string::npos && slash2 + 1 < rest.size()) {
    w.service_account = rest.substr(slash2 + 1);
  }
  std::size_t pos = 0;
  while (pos < labels.size()) {
    auto comma = labels.find(',', pos);
    if (comma == std::string::npos) comma = labels.size();
    const std::string kv = labels.substr(pos, comma - pos);
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return util::make_error("--workload: label \"" + kv + "\" is not KEY=VALUE");
    }
    w.labels[kv.substr(0, eq)] = kv.substr(eq + 1);
    pos = comma + 1;
  }
  return w;
}

source::ClusterState load(const std::vector<std::string>& files, std::uint64_t max_bytes) {
  source::ClusterState s;
  source::ReadOptions options;
  options.max_file_bytes = max_bytes;
  source::load_paths(s, files, options);
  for (const auto& e : s.errors) std::cerr << "tollgate: " << e << "\n";
  return s;
}

std::string format_finding(const policy::Finding& f) {
  std::string s = std::string(policy::severity_name(f.severity)) + " " + f.code + " " + f.object;
  if (!f.path.empty()) s += ": " + f.path;
  return s + ": " + f.message;
}

// The inputs of a check: the workload, the mesh settings and the request.
struct CheckInputs {
  policy::Workload workload;
  policy::MeshConfig mesh;
  eval::Request request;
};

util::Result<CheckInputs> check_inputs(const CheckOptions& o, const source::ClusterState& s) {
  CheckInputs in;
  TOLLGATE_TRY(workload, resolve_workload(o.workload, s));
  in.workload = std::move(workload);
  TOLLGATE_TRY(mesh_json, json_arg(o.mesh, "--mesh"));
  auto mesh = policy::parse_mesh(mesh_json);
  if (!mesh.ok()) return util::make_error("--mesh: " + mesh.error().message);
  in.mesh = std::move(*mesh);
  TOLLGATE_TRY(req_json, json_arg(o.request, "--request"));
  auto request = eval::parse_request(req_json);
  if (!request.ok()) return util::make_error("--request: " + request.error().message);
  in.request = std::move(*request);
  return in;
}

using Misses = std::vector<std::pair<const compile::TableRule*, std::string>>;

void print_check_json(json dj, const CheckInputs& in, const compile::DecisionTable& table,
                      const Misses& misses) {
  if (!misses.empty()) {
    json arr = json::array();
    for (const auto& [rule, why] : misses) {
      arr.push_back({{"policy", rule->policy}, {"rule", rule->rule}, {"mismatch", why}});
    }
    dj["allowRulesNotMatched"] = std::move(arr);
  }
  dj["workload"] = {{"namespace", in.workload.namespace_},
                    {"labels", in.workload.labels},
                    {"serviceAccount", in.workload.service_account}};
  dj["policies"] = table.policies;
  std::cout << dj.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
}

void print_check_text(const json& dj, const eval::Decision& d, const CheckInputs& in,
                      const compile::DecisionTable& table, const Misses& misses) {
  const policy::Workload& w = in.workload;
  std::cout << (d.allowed ? "ALLOW" : "DENY");
  if (d.rule != nullptr) {
    std::cout << "  by " << d.rule->policy << " (" << policy::action_name(d.rule->action)
              << ", rule " << d.rule->rule << ")";
  } else {
    std::cout << "  (default: no policy decided)";
  }
  std::cout << "\n  " << dj["reason"].get<std::string>() << "\n";
  std::cout << "  workload " << w.namespace_ << "/" << (w.name.empty() ? "(described)" : w.name)
            << " (service account " << w.service_account << ")\n";
  std::cout << "  policies that apply: ";
  if (table.policies.empty()) std::cout << "none";
  for (std::size_t i = 0; i < table.policies.size(); ++i) {
    std::cout << (i ? ", " : "") << table.policies[i];
  }
  std::cout << "\n";
  for (const auto& [rule, why] : misses) {
    std::cout << "  not allowed by " << rule->policy << " rule " << rule->rule << ": " << why
              << "\n";
  }
  if (d.audit != nullptr) std::cout << "  audited by " << d.audit->policy << "\n";
  if (d.dry_run_evaluated) {
    std::cout << "  dry-run policies would " << (d.dry_run_allowed ? "ALLOW" : "DENY");
    if (d.dry_run_rule != nullptr) std::cout << " (" << d.dry_run_rule->policy << ")";
    std::cout << "\n";
  }
  for (const auto& n : table.notes) std::cout << "  note: " << n << "\n";
}

}  // namespace

int run_check(const CheckOptions& o) {
  const source::ClusterState s = load(o.files, o.max_manifest_bytes);
  if (!s.errors.empty()) return 2;
  auto in = check_inputs(o, s);
  if (!in.ok()) {
    std::cerr << "tollgate: " << in.error().message << "\n";
    return 2;
  }
  const compile::DecisionTable table = compile::compile_table(s.policies, in->workload, in->mesh);
  eval::PreparedRequest prepared;
  eval::prepare(in->request, table.path_normalization, prepared);
  const eval::Decision d = eval::evaluate(table, prepared);
  json dj = eval::decision_json(table, d, prepared);
  // When ALLOW policies apply and none matched, say why each ALLOW rule missed.
  Misses misses;
  if (d.cause == eval::Cause::kNoAllowMatched) {
    for (const auto& rule : table.allow) {
      if (misses.size() == 10) break;
      misses.emplace_back(&rule, eval::mismatch(rule, prepared));
    }
  }
  if (o.output == "json") {
    print_check_json(std::move(dj), *in, table, misses);
  } else {
    print_check_text(dj, d, *in, table, misses);
  }
  return 0;
}

int run_lint(const LintOptions& o) {
  const source::ClusterState s = load(o.files, o.max_manifest_bytes);
  auto mesh_json = json_arg(o.mesh, "--mesh");
  if (!mesh_json.ok()) {
    std::cerr << "tollgate: " << mesh_json.error().message << "\n";
    return 2;
  }
  auto mesh = policy::parse_mesh(*mesh_json);
  if (!mesh.ok()) {
    std::cerr << "tollgate: --mesh: " << mesh.error().message << "\n";
    return 2;
  }
  std::vector<const policy::Policy*> policies;
  for (const auto& p : s.policies) policies.push_back(&p);
  lint::Context in;
  in.policies = policies;
  in.workloads = s.workloads;
  in.services = s.services;
  in.service_accounts = &s.service_accounts;
  in.namespaces = &s.namespaces;
  in.mesh = *mesh;
  const auto findings = lint::lint_all(in);
  int errors = 0;
  for (const auto& f : findings) errors += f.severity == policy::Finding::Severity::kError;
  if (o.output == "json") {
    json arr = json::array();
    for (const auto& f : findings) arr.push_back(policy::finding_json(f));
    std::cout << json{{"findings", arr}, {"errors", errors}}.dump(2, ' ', false,
                                                                  json::error_handler_t::replace)
              << "\n";
  } else {
    for (const auto& f : findings) std::cout << format_finding(f) << "\n";
    std::cout << findings.size() << " finding(s), " << errors << " error(s) in "
              << s.policies.size() << " policies\n";
  }
  if (!s.errors.empty()) return 2;
  return errors > 0 ? 1 : 0;
}

}  // namespace tollgate::app
