// Who is asking the controller, and what they may read (docs/security.md): the identity a
// TokenReview vouches for, or a SPIFFE client certificate's, and the rule that decides which
// pod tables it may read. Pure functions; thread-safe.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/util/result.h"

namespace tollgate::auth {

// The audience agents' projected tokens are minted for.
inline constexpr std::string_view kAudience = "tollgate";

struct Identity {
  std::string username, uid;
  std::vector<std::string> groups;
  std::map<std::string, std::vector<std::string>> extra;
  // From a username "system:serviceaccount:<ns>:<sa>"; empty for other users.
  std::string sa_namespace, sa_name;
  // From a pod-bound token's extra "authentication.kubernetes.io/pod-name" and "pod-uid".
  std::string pod_name, pod_uid;
  bool from_certificate = false;  // a client certificate's SPIFFE id, not a token
};

// The identity in a TokenReview answer (authentication.k8s.io/v1) for `audience`. An error
// says why the token is not accepted, without any of it: not authenticated (with the API
// server's error), not for this audience, or a malformed answer.
util::Result<Identity> identity_from_token_review(const nlohmann::json& review,
                                                  std::string_view audience);

// The TokenReview to create for `token`.
nlohmann::json token_review_request(std::string_view token, std::string_view audience);

// The service account a SPIFFE principal ("<td>/ns/<ns>/sa/<sa>", with or without
// "spiffe://") names, as an identity like that account's token; nullopt for anything else.
std::optional<Identity> identity_from_spiffe(std::string_view principal);

// The pod whose table is asked for, as the controller knows it.
struct PodRef {
  std::string namespace_, name, uid, service_account;
};

// May `who` read `pod`'s table? A pod-bound token: only its own pod (same namespace, name
// and uid). A service account's token or certificate: the pods that run as that account in
// its namespace. Anyone else: no. The error is the 403 reason, and names no pod but the
// caller's own.
util::Status may_read_table(const Identity& who, const PodRef& pod);

}  // namespace tollgate::auth
