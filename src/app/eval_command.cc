// `tollgate eval`: parse, compile (cached per distinct policy set), evaluate.
#include <iostream>
#include <string>
#include <unordered_map>

#include "tollgate/app/cli.h"
#include "tollgate/compile/compile.h"
#include "tollgate/eval/evaluate.h"
#include "tollgate/policy/parse.h"

namespace tollgate::app {
namespace {

using nlohmann::json;

struct Compiled {
  compile::DecisionTable table;
};

// Decision for one input object, or {"error": ...}.
json decide(const json& in, std::unordered_map<std::string, Compiled>& cache) {
  if (!in.is_object()) return {{"error", "input: must be an object"}};
  for (const auto& [key, val] : in.items()) {
    if (key != "policies" && key != "workload" && key != "request" && key != "mesh") {
      return {{"error", "input." + key + ": unknown field"}};
    }
  }
  auto pit = in.find("policies");
  if (pit != in.end() && !pit->is_null() && !pit->is_array()) {
    return {{"error", "policies: must be a list of AuthorizationPolicy objects"}};
  }
  auto wit = in.find("workload");
  if (wit == in.end()) return {{"error", "workload: is required"}};
  auto rit = in.find("request");
  if (rit == in.end()) return {{"error", "request: is required"}};
  auto mit = in.find("mesh");

  std::string key;
  if (pit != in.end()) key = pit->dump();
  key += '\x1f';
  key += wit->dump();
  key += '\x1f';
  if (mit != in.end()) key += mit->dump();
  auto cached = cache.find(key);
  if (cached == cache.end()) {
    auto mesh = policy::parse_mesh(mit == in.end() ? json() : *mit);
    if (!mesh.ok()) return {{"error", mesh.error().message}};
    auto workload = policy::parse_workload(*wit);
    if (!workload.ok()) return {{"error", workload.error().message}};
    std::vector<policy::Policy> policies;
    if (pit != in.end() && pit->is_array()) {
      for (std::size_t i = 0; i < pit->size(); ++i) {
        const json& p = (*pit)[i];
        if (!policy::is_authorization_policy(p)) {
          return {{"error", "policies[" + std::to_string(i) + "]: kind must be AuthorizationPolicy"}};
        }
        policies.push_back(policy::parse_policy(p));
      }
    }
    if (cache.size() > 4096) cache.clear();
    cached = cache.emplace(std::move(key),
                           Compiled{compile::compile_table(policies, *workload, *mesh)})
                 .first;
  }
  auto request = eval::parse_request(*rit);
  if (!request.ok()) return {{"error", request.error().message}};
  const auto& table = cached->second.table;
  eval::PreparedRequest prepared;
  eval::prepare(*request, table.path_normalization, prepared);
  const eval::Decision d = eval::evaluate(table, prepared);
  return eval::decision_json(table, d, prepared);
}

json parse_and_decide(std::string_view text, std::unordered_map<std::string, Compiled>& cache) {
  json in;
  try {
    in = json::parse(text);
  } catch (const json::exception& e) {
    return {{"error", std::string("input is not valid JSON: ") + e.what()}};
  }
  return decide(in, cache);
}

}  // namespace

int run_eval(std::istream& in, std::ostream& out, bool jsonl) {
  std::unordered_map<std::string, Compiled> cache;
  int status = 0;
  if (!jsonl) {
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    json d = parse_and_decide(text, cache);
    if (d.contains("error")) status = 1;
    out << d.dump(2) << "\n";
    return status;
  }
  std::string line;
  std::size_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json d = parse_and_decide(line, cache);
    if (d.contains("error")) {
      status = 1;
      d["error"] = "line " + std::to_string(lineno) + ": " + d["error"].get<std::string>();
    }
    out << d.dump() << "\n";
  }
  out.flush();
  return status;
}

}  // namespace tollgate::app
