#include "tollgate/agent/authorizer.h"

#include <nlohmann/json.hpp>

#include "tollgate/eval/evaluate.h"

namespace tollgate::agent {
namespace {

Answer denied_without_table(std::string_view reason_code, const std::string& reason) {
  Answer a;
  a.allowed = false;
  a.body = nlohmann::json{
      {"decision", "DENY"},
      {"policy", nullptr},
      {"action", nullptr},
      {"rule", nullptr},
      {"reason",
       reason}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  a.headers = {{"X-Tollgate-Decision", "DENY"}, {"X-Tollgate-Reason", std::string(reason_code)}};
  return a;
}

}  // namespace

Answer Authorizer::decide(const eval::Request& r) const {
  const auto active = active_.load();
  if (!active) {
    return denied_without_table(kReasonNoTable,
                                "the agent has no table for this pod yet (never synced, nothing "
                                "saved): denied, failing closed");
  }
  const compile::DecisionTable& t = active->table;
  eval::PreparedRequest prepared;
  eval::prepare(r, t.path_normalization, prepared);
  const eval::Decision d = eval::evaluate(t, prepared);
  Answer a;
  a.allowed = d.allowed;
  eval::append_decision_json(a.body, t, d, prepared);
  a.headers.emplace_back("X-Tollgate-Decision", d.allowed ? "ALLOW" : "DENY");
  if (d.rule != nullptr) {
    a.policy = d.rule->policy;
    a.rule = d.rule->rule;
    a.headers.emplace_back("X-Tollgate-Policy", a.policy);
    a.headers.emplace_back("X-Tollgate-Rule", std::to_string(a.rule));
  }
  return a;
}

Answer Authorizer::refuse(std::string_view why) {
  return denied_without_table(kReasonUnreadable,
                              "the request cannot be read: " + std::string(why) + "; denied");
}

void Authorizer::activate(std::shared_ptr<const ActiveTable> table) {
  active_.publish(std::move(table));
}

std::shared_ptr<const ActiveTable> Authorizer::active() const { return active_.load(); }

}  // namespace tollgate::agent
