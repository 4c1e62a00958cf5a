#include "tollgate/status/conditions.h"

#include <algorithm>

namespace tollgate::status {
namespace {

using nlohmann::json;

std::string capped(std::string s) {
  if (s.size() <= kMaxMessage) return s;
  std::size_t cut = kMaxMessage - 3;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // UTF-8
  s.resize(cut);
  return s + "...";
}

bool ours(const json& c) {
  if (!c.is_object()) return false;
  auto t = c.find("type");
  return t != c.end() && t->is_string() && t->get<std::string>().starts_with(kTypePrefix);
}

}  // namespace

std::vector<Condition> desired_conditions(const policy::Policy& p,
                                          std::span<const policy::Finding> lint) {
  std::vector<Condition> out;
  std::vector<std::string> errors;
  for (const auto& f : p.findings) {
    if (f.severity == policy::Finding::Severity::kError)
      errors.push_back(f.path + ": " + f.message);
  }
  if (errors.empty()) {
    out.push_back({std::string(kAccepted), "True", "Compiled", "compiled without errors"});
  } else {
    std::string message = "compiled to fail closed (" + std::to_string(errors.size()) +
                          (errors.size() == 1 ? " error): " : " errors): ");
    for (std::size_t i = 0; i < errors.size() && i < 3; ++i) {
      if (i > 0) message += "; ";
      message += errors[i];
    }
    out.push_back({std::string(kAccepted), "False", "Invalid", capped(std::move(message))});
  }
  auto shadowed = std::find_if(lint.begin(), lint.end(),
                               [](const policy::Finding& f) { return f.code == "TG101"; });
  if (shadowed != lint.end()) {
    out.push_back({std::string(kEffective), "False", "ShadowedByDeny", capped(shadowed->message)});
  } else {
    out.push_back(
        {std::string(kEffective), "True", "Effective", "no deny-all DENY policy overrides it"});
  }
  return out;
}

std::optional<json> merge_conditions(const json& current, const std::vector<Condition>& want,
                                     std::int64_t generation, std::string_view now) {
  json merged = json::array();
  const json empty = json::array();
  const json& list = current.is_array() ? current : empty;
  std::size_t ours_before = 0;
  for (const auto& c : list) {
    if (ours(c)) {
      ++ours_before;
    } else {
      merged.push_back(c);
    }
  }
  bool changed = ours_before != want.size();
  for (const Condition& w : want) {
    json next = {
        {"type", w.type},     {"status", w.status},   {"observedGeneration", generation},
        {"reason", w.reason}, {"message", w.message}, {"lastTransitionTime", std::string(now)}};
    auto old = std::find_if(list.begin(), list.end(),
                            [&](const json& c) { return ours(c) && c["type"] == w.type; });
    if (old == list.end()) {
      changed = true;
    } else {
      auto status = old->find("status");
      auto since = old->find("lastTransitionTime");
      if (status != old->end() && *status == w.status && since != old->end()) {
        next["lastTransitionTime"] = *since;
      }
      if (*old != next) changed = true;
    }
    merged.push_back(std::move(next));
  }
  if (!changed) return std::nullopt;
  return merged;
}

json status_patch(const json& conditions, std::string_view resource_version) {
  return {{"metadata", {{"resourceVersion", std::string(resource_version)}}},
          {"status", {{"conditions", conditions}}}};
}

}  // namespace tollgate::status
