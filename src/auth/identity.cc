#include "tollgate/auth/identity.h"

#include <algorithm>

namespace tollgate::auth {
namespace {

using nlohmann::json;

constexpr std::string_view kSaPrefix = "system:serviceaccount:";
constexpr const char* kPodNameKey = "authentication.kubernetes.io/pod-name";
constexpr const char* kPodUidKey = "authentication.kubernetes.io/pod-uid";

const json* member(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

std::string string_member(const json& j, const char* key) {
  const json* v = member(j, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

void split_service_account(Identity& id) {
  if (!id.username.starts_with(kSaPrefix)) return;
  const std::string_view rest = std::string_view(id.username).substr(kSaPrefix.size());
  const auto colon = rest.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == rest.size() ||
      rest.find(':', colon + 1) != std::string_view::npos) {
    return;
  }
  id.sa_namespace = std::string(rest.substr(0, colon));
  id.sa_name = std::string(rest.substr(colon + 1));
}

}  // namespace

json token_review_request(std::string_view token, std::string_view audience) {
  return {{"apiVersion", "authentication.k8s.io/v1"},
          {"kind", "TokenReview"},
          {"spec", {{"token", std::string(token)}, {"audiences", {std::string(audience)}}}}};
}

util::Result<Identity> identity_from_token_review(const json& review, std::string_view audience) {
  const json* status = member(review, "status");
  if (status == nullptr || !status->is_object()) {
    return util::make_error("the TokenReview answer has no status");
  }
  const json* authenticated = member(*status, "authenticated");
  if (authenticated == nullptr || !authenticated->is_boolean() || !authenticated->get<bool>()) {
    const std::string why = string_member(*status, "error");
    return util::make_error("the token is not valid" + (why.empty() ? "" : ": " + why));
  }
  // An API server that does not support audiences answers without them; one that does lists
  // the intersection with the spec's. Either way, ours must be there.
  const json* audiences = member(*status, "audiences");
  bool audience_ok = false;
  if (audiences != nullptr && audiences->is_array()) {
    audience_ok = std::any_of(audiences->begin(), audiences->end(),
                              [&](const json& a) { return a.is_string() && a == audience; });
  }
  if (!audience_ok) {
    return util::make_error("the token is not for the audience \"" + std::string(audience) + "\"");
  }
  const json* user = member(*status, "user");
  if (user == nullptr || !user->is_object()) {
    return util::make_error("the TokenReview answer has no user");
  }
  Identity id;
  id.username = string_member(*user, "username");
  id.uid = string_member(*user, "uid");
  if (id.username.empty()) return util::make_error("the TokenReview answer has no username");
  if (const json* groups = member(*user, "groups"); groups != nullptr && groups->is_array()) {
    for (const auto& g : *groups) {
      if (g.is_string()) id.groups.push_back(g.get<std::string>());
    }
  }
  if (const json* extra = member(*user, "extra"); extra != nullptr && extra->is_object()) {
    for (const auto& [key, values] : extra->items()) {
      if (!values.is_array()) continue;
      auto& out = id.extra[key];
      for (const auto& v : values) {
        if (v.is_string()) out.push_back(v.get<std::string>());
      }
    }
  }
  split_service_account(id);
  auto one = [&](const char* key) {
    auto it = id.extra.find(key);
    return it != id.extra.end() && it->second.size() == 1 ? it->second.front() : std::string();
  };
  id.pod_name = one(kPodNameKey);
  id.pod_uid = one(kPodUidKey);
  return id;
}

std::optional<Identity> identity_from_spiffe(std::string_view principal) {
  if (principal.starts_with("spiffe://")) principal.remove_prefix(9);
  // <trust-domain>/ns/<ns>/sa/<sa>
  const auto first = principal.find('/');
  if (first == std::string_view::npos || first == 0) return std::nullopt;
  std::string_view rest = principal.substr(first + 1);
  if (!rest.starts_with("ns/")) return std::nullopt;
  rest.remove_prefix(3);
  const auto sa = rest.find("/sa/");
  if (sa == std::string_view::npos || sa == 0) return std::nullopt;
  const std::string_view ns = rest.substr(0, sa);
  const std::string_view name = rest.substr(sa + 4);
  if (name.empty() || name.find('/') != std::string_view::npos ||
      ns.find('/') != std::string_view::npos) {
    return std::nullopt;
  }
  Identity id;
  id.sa_namespace = std::string(ns);
  id.sa_name = std::string(name);
  id.username = std::string(kSaPrefix) + id.sa_namespace + ":" + id.sa_name;
  id.from_certificate = true;
  return id;
}

util::Status may_read_table(const Identity& who, const PodRef& pod) {
  if (!who.pod_name.empty()) {
    // A pod-bound token: its own pod only, and the same incarnation of it.
    if (who.sa_namespace == pod.namespace_ && who.pod_name == pod.name &&
        (who.pod_uid.empty() || who.pod_uid == pod.uid)) {
      return util::ok();
    }
    return util::make_error("this token is bound to pod " + who.sa_namespace + "/" + who.pod_name +
                            (who.pod_uid.empty() ? "" : " (uid " + who.pod_uid + ")") +
                            " and may read only that pod's table");
  }
  if (!who.sa_name.empty()) {
    if (who.sa_namespace == pod.namespace_ && who.sa_name == pod.service_account) {
      return util::ok();
    }
    return util::make_error("service account " + who.sa_namespace + "/" + who.sa_name +
                            " may read only the tables of pods that run as it");
  }
  return util::make_error("user " + who.username +
                          " is not a service account and may not read pod tables");
}

}  // namespace tollgate::auth
