#include "tollgate/agent/observe.h"

#include "tollgate/util/log.h"

namespace tollgate::agent {

void DecisionObserver::observe(const eval::Request* request, const Answer& answer,
                               std::chrono::nanoseconds elapsed) const {
  metrics_.decided(answer, elapsed);
  const bool log_denial = !answer.allowed && util::log_enabled(util::LogLevel::kInfo);
  if (!log_denial && log_ == nullptr) return;
  const auto active = authorizer_.active();
  const std::string hash = active ? active->table.hash : std::string();
  if (log_denial) {
    std::string reason;
    for (const auto& [name, value] : answer.headers) {
      if (name == "X-Tollgate-Reason") reason = value;
    }
    auto opt = [](const std::optional<std::string>& v) { return v ? *v : std::string(); };
    util::log_info("request denied",
                   {{"source", request != nullptr ? opt(request->source_ip) : ""},
                    {"principal", request != nullptr ? opt(request->principal) : ""},
                    {"method", request != nullptr ? opt(request->method) : ""},
                    {"path", request != nullptr ? opt(request->path) : ""},
                    {"policy", answer.policy},
                    {"rule", answer.rule >= 0 ? std::to_string(answer.rule) : ""},
                    {"reason", reason},
                    {"table", hash}});
  }
  if (log_ != nullptr) log_->write(request, answer, hash);
}

}  // namespace tollgate::agent
