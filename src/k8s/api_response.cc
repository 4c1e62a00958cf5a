#include <nlohmann/json.hpp>

#include "tollgate/k8s/transport.h"

namespace tollgate::k8s {

std::string status_message(std::string_view body) {
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  auto it = j.is_object() ? j.find("message") : j.end();
  return j.is_object() && it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string api_error(const ApiResponse& r) {
  const std::string msg = status_message(r.body);
  return "the API server answered " + std::to_string(r.status) + (msg.empty() ? "" : ": " + msg);
}

std::string describe(const util::Result<ApiResponse>& r) {
  return r.ok() ? api_error(*r) : r.error().message;
}

}  // namespace tollgate::k8s
