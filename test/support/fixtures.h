// Small builders for tests: a policy from YAML, a workload, a request from JSON, a decision;
// cluster objects and index events as the sources hand them to the index.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "tollgate/compile/compile.h"
#include "tollgate/eval/evaluate.h"
#include "tollgate/index/objects.h"
#include "tollgate/policy/parse.h"

namespace tollgate::testing {

inline policy::Policy mk_policy(const std::string& yaml) {
  auto docs = policy::parse_documents(yaml, "test.yaml");
  if (!docs.ok()) throw std::runtime_error(docs.error().message);
  if (docs->size() != 1) throw std::runtime_error("expected one document");
  return policy::parse_policy((*docs)[0].object);
}

inline std::vector<policy::Policy> mk_policies(const std::string& yaml) {
  auto docs = policy::parse_documents(yaml, "test.yaml");
  if (!docs.ok()) throw std::runtime_error(docs.error().message);
  std::vector<policy::Policy> out;
  for (const auto& d : *docs) out.push_back(policy::parse_policy(d.object));
  return out;
}

inline policy::Workload mk_workload(const std::string& ns,
                                    std::map<std::string, std::string> labels = {},
                                    const std::string& sa = "default") {
  policy::Workload w;
  w.namespace_ = ns;
  w.labels = std::move(labels);
  w.service_account = sa;
  return w;
}

inline eval::Request mk_request(const std::string& json_text) {
  auto r = eval::parse_request(nlohmann::json::parse(json_text));
  if (!r.ok()) throw std::runtime_error(r.error().message);
  return std::move(r).value();
}

struct Outcome {
  std::string decision;  // "ALLOW" | "DENY"
  std::string policy;    // "" for a default decision
  int rule = -1;
  std::string reason;
};

inline Outcome decide(const std::vector<policy::Policy>& ps, const policy::Workload& w,
                      const std::string& request_json, const policy::MeshConfig& mesh = {}) {
  const auto table = compile::compile_table(ps, w, mesh);
  const auto req = mk_request(request_json);
  eval::PreparedRequest p;
  eval::prepare(req, table.path_normalization, p);
  const auto d = eval::evaluate(table, p);
  Outcome o;
  o.decision = d.allowed ? "ALLOW" : "DENY";
  if (d.rule != nullptr) {
    o.policy = d.rule->policy;
    o.rule = d.rule->rule;
  }
  o.reason = eval::reason(table, d, p);
  return o;
}

// ---- cluster objects and index events ----------------------------------------------------

// A pod manifest: default/web, labelled app=web, service account web.
inline constexpr const char* kWebPodYaml = R"(apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {serviceAccountName: web}
)";

// An AuthorizationPolicy object with this spec (JSON text), as the index takes it.
inline index::PolicyObject mk_policy(const std::string& ns, const std::string& name,
                                     const std::string& spec_json) {
  nlohmann::json j = {{"apiVersion", "security.istio.io/v1"},
                      {"kind", "AuthorizationPolicy"},
                      {"metadata", {{"namespace", ns}, {"name", name}}},
                      {"spec", nlohmann::json::parse(spec_json)}};
  return index::policy_object(j);
}

// A running pod, as the index takes it.
inline index::PodObject mk_pod(const std::string& ns, const std::string& name,
                               std::vector<std::pair<std::string, std::string>> labels,
                               const std::string& ip = "",
                               const std::string& service_account = "") {
  index::PodObject p;
  p.namespace_ = ns;
  p.name = name;
  p.labels = std::move(labels);
  p.service_account = service_account;
  p.phase = "Running";
  if (!ip.empty()) p.ips.push_back(ip);
  return p;
}

inline index::Event upsert(index::Object o, index::Kind k) {
  index::Event e;
  e.kind = k;
  e.objects.push_back(std::move(o));
  return e;
}

inline index::Event del(index::Object o, index::Kind k) {
  index::Event e = upsert(std::move(o), k);
  e.type = index::Event::Type::kDelete;
  return e;
}

// A complete list of one kind: the index's state of that kind becomes exactly `objects`.
inline index::Event replace(index::Kind k, std::vector<index::Object> objects = {}) {
  index::Event e;
  e.kind = k;
  e.type = index::Event::Type::kReplace;
  e.objects = std::move(objects);
  return e;
}

}  // namespace tollgate::testing
