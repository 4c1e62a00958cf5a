// The agent's HTTP endpoints (docs/agent.md#endpoints) on the HTTP core (tollgate_http):
// /v1/authz for nginx auth_request, Caddy forward_auth and Traefik forwardAuth,
// /v1/authz/envoy/<path> for Envoy's ext_authz http_service, and /healthz, /readyz,
// /metrics. Every authorization answer is 200 or 403 (never 5xx, never 401). Thread-safe:
// handle() runs on the server's workers.
#pragma once

#include <functional>

#include "tollgate/agent/authorizer.h"
#include "tollgate/agent/authz_request.h"
#include "tollgate/agent/metrics.h"
#include "tollgate/agent/observe.h"
#include "tollgate/agent/sync.h"
#include "tollgate/http/handler.h"

namespace tollgate::agent {

inline constexpr std::string_view kAuthzPath = "/v1/authz";
inline constexpr std::string_view kEnvoyPrefix = "/v1/authz/envoy";

class HttpService final : public http::Handler {
 public:
  // Each must outlive the service. `sync_status` tells /readyz about the sync (may be empty).
  HttpService(const Authorizer& authorizer, AgentMetrics& metrics, const DecisionObserver& observer,
              MappingOptions mapping, std::function<SyncStatus()> sync_status);

  http::HandlerOptions options() const override;
  http::Answer handle(const http::Request& r, http::Exchange& x) override;
  void refused(int status) override { metrics_.http_refused(status); }

  // The HTTP response for an authorization answer: 200 or 403 with the X-Tollgate-* headers;
  // a 403 carries the decision JSON.
  static http::Response respond(const Answer& a);

 private:
  http::Response authorize(const http::Request& r, std::string_view path);
  http::Response ready() const;

  const Authorizer& authorizer_;
  AgentMetrics& metrics_;
  const DecisionObserver& observer_;
  const MappingOptions mapping_;
  const std::function<SyncStatus()> sync_status_;
};

}  // namespace tollgate::agent
