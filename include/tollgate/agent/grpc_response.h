// The CheckResponse Envoy's gRPC ext_authz filter reads, from the agent's Answer
// (docs/agent.md#grpc-ext_authz): status OK with the X-Tollgate-* headers for the upstream, or
// PERMISSION_DENIED with a 403, the headers and the decision JSON for the client. Pure;
// thread-safe.
#pragma once

#include "tollgate/agent/authorizer.h"

namespace envoy::service::auth::v3 {
class CheckResponse;
}

namespace tollgate::agent {

// google.rpc.Code values the agent answers with.
inline constexpr int kGrpcOk = 0;
inline constexpr int kGrpcPermissionDenied = 7;

// Replaces `out` with the response for `answer`.
void fill_check_response(const Answer& answer, envoy::service::auth::v3::CheckResponse& out);

}  // namespace tollgate::agent
