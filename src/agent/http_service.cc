#include "tollgate/agent/http_service.h"

#include <chrono>

#include "tollgate/util/json_text.h"

namespace tollgate::agent {
namespace {

using Clock = std::chrono::steady_clock;

std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

}  // namespace

HttpService::HttpService(const Authorizer& authorizer, AgentMetrics& metrics,
                         const DecisionObserver& observer, MappingOptions mapping,
                         std::function<SyncStatus()> sync_status)
    : authorizer_(authorizer),
      metrics_(metrics),
      observer_(observer),
      mapping_(mapping),
      sync_status_(std::move(sync_status)) {}

http::HandlerOptions HttpService::options() const {
  http::HandlerOptions o;
  o.all_headers = true;  // the original request's headers are decided on
  o.keep_body = false;   // a forwarded body is never looked at
  return o;
}

http::Response HttpService::respond(const Answer& a) {
  http::Response res;
  res.status = a.allowed ? 200 : 403;
  for (const auto& [name, value] : a.headers) {
    res.headers += name;
    res.headers += ": ";
    res.headers += value;
    res.headers += "\r\n";
  }
  if (!a.allowed) res.body = a.body;
  return res;
}

http::Response HttpService::authorize(const http::Request& r, std::string_view path) {
  const auto t0 = Clock::now();
  HeaderFields headers;
  headers.reserve(r.headers.size());
  for (const auto& h : r.headers) headers.emplace_back(h.name, h.value);
  util::Result<eval::Request> request = util::make_error("");
  if (path == kAuthzPath) {
    request = map_forward_auth(headers, mapping_);
  } else {
    std::string_view rest = r.target.substr(kEnvoyPrefix.size());
    if (rest.empty() || rest.front() != '/') {
      request = util::make_error("no original path after " + std::string(kEnvoyPrefix));
    } else {
      request = map_envoy(r.method, rest, headers, mapping_);
    }
  }
  const Answer a =
      request.ok() ? authorizer_.decide(*request) : Authorizer::refuse(request.error().message);
  observer_.observe(request.ok() ? &*request : nullptr, a, Clock::now() - t0);
  return respond(a);
}

http::Response HttpService::ready() const {
  const auto active = authorizer_.active();
  const SyncStatus s = sync_status_ ? sync_status_() : SyncStatus{};
  std::string body = "{\"ready\":";
  body += active ? "true" : "false";
  body += ",\"table\":";
  if (active) {
    util::append_json_string(body, active->table.hash);
    body += ",\"source\":";
    body += active->source == ActiveTable::Source::kFetched ? "\"fetched\"" : "\"restored\"";
  } else {
    body += "null";
  }
  body += ",\"controller\":";
  body += s.controller_ok ? "\"ok\"" : "\"unreachable\"";
  if (!s.last_error.empty()) {
    body += ",\"error\":";
    util::append_json_string(body, s.last_error);
  }
  if (!s.restore_error.empty()) {
    body += ",\"restoreError\":";
    util::append_json_string(body, s.restore_error);
  }
  body += "}";
  http::Response res;
  res.status = active ? 200 : 503;
  res.body = std::move(body);
  return res;
}

http::Answer HttpService::handle(const http::Request& r, http::Exchange& x) {
  (void)x;
  const std::string_view path = path_of(r.target);
  if (path == kAuthzPath || path.starts_with(std::string(kEnvoyPrefix) + "/") ||
      path == kEnvoyPrefix) {
    return http::Answer::now(authorize(r, path));
  }
  if (path == "/healthz") {
    http::Response res;
    res.body = "{\"status\":\"ok\"}";
    return http::Answer::now(std::move(res));
  }
  if (path == "/readyz") return http::Answer::now(ready());
  if (path == "/metrics") {
    http::Response res;
    res.body = metrics_.render(authorizer_, std::chrono::system_clock::now());
    res.content_type = "text/plain; version=0.0.4; charset=utf-8";
    return http::Answer::now(std::move(res));
  }
  return http::Answer::now(http::error_response(
      404, "no such endpoint: " + std::string(path) +
               " (the agent serves /v1/authz, /v1/authz/envoy/<path>, /healthz, /readyz, "
               "/metrics)"));
}

}  // namespace tollgate::agent
