#include "tollgate/server/api.h"

#include <charconv>
#include <nlohmann/json.hpp>
#include <utility>

#include "tollgate/compile/compile.h"
#include "tollgate/eval/evaluate.h"
#include "tollgate/eval/request.h"
#include "tollgate/lint/lint.h"
#include "tollgate/policy/parse.h"
#include "tollgate/util/json_text.h"
#include "tollgate/util/log.h"
#include "tollgate/util/strings.h"
#include "tollgate/util/time.h"

namespace tollgate::server {

namespace {

using nlohmann::json;

constexpr int kMaxJsonDepth = 64;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

HttpResponse json_response(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

// Seconds as a non-negative integer; nullopt if it is not one.
std::optional<long long> parse_seconds(std::string_view s) {
  long long v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

// Rejects JSON nested deeper than kMaxJsonDepth before the recursive parts see it.
bool too_deep(std::string_view body) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}

std::string pod_key(const publish::PodEntry& e) {
  return e.pod->shape->namespace_ + "/" + e.pod->name;
}

HttpResponse not_synced() {
  auto r = error_response(503,
                          "the controller has not completed its first full sync of the cluster; "
                          "no decision data yet (retry, and keep enforcing what you have)");
  r.headers = "Retry-After: 1\r\n";
  return r;
}

}  // namespace

HttpResponse error_response(int status, std::string_view message) {
  return http::error_response(status, message);
}

bool etag_matches(std::string_view if_none_match, std::string_view etag) {
  if (if_none_match.empty()) return false;
  auto strip = [](std::string_view s) {
    s = util::trim(s);
    if (s.starts_with("W/")) s.remove_prefix(2);
    return s;
  };
  const auto want = strip(etag);
  for (auto item : util::split(if_none_match, ',')) {
    item = util::trim(item);
    if (item == "*" || strip(item) == want) return true;
  }
  return false;
}

Api::Api(ApiOptions options, WaitList& waiters, Metrics& metrics)
    : options_(std::move(options)), waiters_(waiters), metrics_(metrics) {}

// What the query string and Prefer header say: podIP, and how long a table request may wait.
struct QueryParams {
  std::string pod_ip;
  std::optional<long long> wait;
};

namespace {

// Is the request's method `m`? If not, `out` answers 405 naming the one allowed.
bool method_is(const HttpRequest& r, std::string_view path, std::string_view m, Routed& out) {
  if (r.method == m) return true;
  out.response = error_response(405, "method " + std::string(r.method) + " is not allowed on " +
                                         std::string(path) + "; use " + std::string(m));
  out.response.headers = "Allow: " + std::string(m) + "\r\n";
  return false;
}

util::Result<QueryParams> query_params(std::string_view query, std::string_view prefer) {
  QueryParams q;
  for (auto kv : util::split(query, '&')) {
    if (kv.empty()) continue;
    const auto eq = kv.find('=');
    const auto key = kv.substr(0, eq);
    auto value = util::percent_decode(eq == std::string_view::npos ? "" : kv.substr(eq + 1), true);
    if (!value) return util::make_error("malformed percent-encoding in the query string");
    if (key == "podIP") {
      q.pod_ip = *value;
    } else if (key == "wait") {
      q.wait = parse_seconds(*value);
      if (!q.wait) return util::make_error("wait: must be a whole number of seconds");
    }
  }
  if (!q.wait && !prefer.empty()) {  // RFC 7240: Prefer: wait=N (among other preferences)
    for (auto pref : util::split(prefer, ',')) {
      for (auto part : util::split(pref, ';')) {
        part = util::trim(part);
        if (part.starts_with("wait=")) q.wait = parse_seconds(util::trim(part.substr(5)));
      }
    }
  }
  return q;
}

// The path's segments, percent-decoded; [0] is "" (the path starts with '/').
util::Result<std::vector<std::string>> path_segments(std::string_view path) {
  if (path.empty() || path[0] != '/') {
    return util::make_error("the request target must be an absolute path");
  }
  std::vector<std::string> segments;
  for (auto seg : util::split(path, '/')) {
    auto d = util::percent_decode(seg, false);
    if (!d) return util::make_error("malformed percent-encoding in the path");
    segments.push_back(std::move(*d));
  }
  return segments;
}

}  // namespace

Routed Api::route(const HttpRequest& r, std::size_t connections,
                  const SourceStatsFn& sources) const {
  Routed out;
  const auto q = r.target.find('?');
  const std::string_view path = r.target.substr(0, q);
  auto params = query_params(q == std::string_view::npos ? "" : r.target.substr(q + 1), r.prefer);
  if (!params.ok()) {
    out.response = error_response(400, params.error().message);
    return out;
  }
  auto segments = path_segments(path);
  if (!segments.ok()) {
    out.response = error_response(400, segments.error().message);
    return out;
  }
  const auto& seg = *segments;
  if (seg.size() >= 3 && seg[1] == "v1" && seg[2] == "tables") {
    return route_table(r, path, seg, *params);
  }
  const auto s = waiters_.snapshot();
  const auto n = seg.size();
  if (n == 3 && seg[1] == "v1" && seg[2] == "check") {
    out.endpoint = Endpoint::kCheck;
    if (method_is(r, path, "POST", out)) out.response = check(*s, r.body);
  } else if (n == 3 && seg[1] == "v1" && seg[2] == "workloads") {
    out.endpoint = Endpoint::kWorkloads;
    if (method_is(r, path, "GET", out)) out.response = workloads(*s);
  } else if (n == 5 && seg[1] == "v1" && seg[2] == "policies") {
    out.endpoint = Endpoint::kPolicy;
    if (method_is(r, path, "GET", out)) out.response = policy(*s, seg[3], seg[4]);
  } else if (n == 2 && seg[1] == "healthz") {
    out.endpoint = Endpoint::kHealthz;
    if (method_is(r, path, "GET", out)) out.response = json_response(200, R"({"status":"ok"})");
  } else if (n == 2 && seg[1] == "readyz") {
    out.endpoint = Endpoint::kReadyz;
    if (method_is(r, path, "GET", out)) out.response = readyz(*s);
  } else if (n == 2 && seg[1] == "metrics") {
    out.endpoint = Endpoint::kMetrics;
    if (method_is(r, path, "GET", out)) {
      MetricsState st;
      st.snapshot = s.get();
      st.parked = waiters_.parked();
      st.connections = connections;
      if (sources) st.sources = sources();
      if (options_.reviews) st.reviews = options_.reviews();
      if (options_.extra_metrics) st.extra = options_.extra_metrics();
      out.response = json_response(200, metrics_.render(st));
      out.response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    }
  } else {
    out.response = error_response(404, "no such endpoint: " + std::string(path));
  }
  return out;
}

// /v1/tables/{namespace}/{pod} and /v1/tables?podIP=A: a TableQuery for Api::table().
Routed Api::route_table(const HttpRequest& r, std::string_view path,
                        const std::vector<std::string>& seg, const QueryParams& params) const {
  Routed out;
  const auto n = seg.size();
  if (n != 3 && n != 5) {
    out.response = error_response(404, "no such endpoint: " + std::string(path));
    return out;
  }
  out.endpoint = n == 5 ? Endpoint::kTable : Endpoint::kTableByIp;
  if (!method_is(r, path, "GET", out)) return out;
  TableQuery t;
  t.if_none_match = std::string(r.if_none_match);
  const long long cap = options_.max_wait.count();
  t.wait = std::chrono::seconds(std::min(params.wait.value_or(0), cap));
  if (n == 5) {
    if (seg[3].empty() || seg[4].empty()) {
      out.response = error_response(400, "want /v1/tables/{namespace}/{pod}");
      return out;
    }
    t.ns = seg[3];
    t.pod = seg[4];
  } else {
    if (params.pod_ip.empty()) {
      out.response = error_response(400,
                                    "want /v1/tables?podIP=ADDRESS or "
                                    "/v1/tables/{namespace}/{pod}");
      return out;
    }
    t.ip = params.pod_ip;
  }
  out.table = std::move(t);
  return out;
}

Api::TableAnswer Api::table(const std::shared_ptr<const publish::Snapshot>& snap,
                            const TableQuery& q, bool may_park) const {
  TableAnswer a;
  const auto& s = *snap;
  if (!s.synced) {
    a.response = not_synced();
    return a;
  }
  const publish::PodEntry* e = q.ip.empty() ? s.find(q.ns, q.pod) : s.find_ip(q.ip);
  if (e == nullptr) {
    const std::string what = q.ip.empty() ? "pod " + q.ns + "/" + q.pod : "a pod with IP " + q.ip;
    a.response = error_response(404, "the controller does not know " + what +
                                         " (yet); do not treat this as \"no policies\"");
    a.response.headers = "X-Tollgate-Revision: " + std::to_string(s.revision) + "\r\n";
    return a;
  }
  if (e->table == nullptr) {  // not expected: every pod of a synced snapshot has a table
    a.response = error_response(503, "no table compiled yet for " + pod_key(*e));
    return a;
  }
  const auto now = std::chrono::system_clock::now();
  std::string headers;
  headers.reserve(160);
  headers += "ETag: ";
  headers += e->table->etag;
  headers += "\r\nX-Tollgate-Revision: ";
  headers += std::to_string(s.revision);
  headers += "\r\nX-Tollgate-Synced-At: ";
  headers += util::rfc3339(s.fresh_as_of(now));
  headers += "\r\nCache-Control: no-cache\r\n";
  if (!q.ip.empty()) headers += "X-Tollgate-Pod: " + pod_key(*e) + "\r\n";
  if (etag_matches(q.if_none_match, e->table->etag)) {
    if (may_park && q.wait.count() > 0) {
      a.park_key = pod_key(*e);
      a.park_etag = e->table->etag;
      return a;
    }
    a.response.status = 304;
  } else {
    a.response.status = 200;
    a.response.keep = snap;
    a.response.view = e->table->wire;
  }
  a.response.headers = std::move(headers);
  return a;
}

HttpResponse Api::check(const publish::Snapshot& s, std::string_view body) const {
  if (too_deep(body)) {
    return error_response(
        400, "request body: JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  json in;
  try {
    in = json::parse(body);
  } catch (const json::exception& e) {
    return error_response(400, std::string("request body is not valid JSON: ") + e.what());
  }
  if (!in.is_object()) return error_response(400, "request body: must be a JSON object");
  for (const auto& [key, _] : in.items()) {
    if (key != "workload" && key != "request") {
      return error_response(400, "request body." + key + ": unknown field");
    }
  }
  if (!in.contains("workload") || !in["workload"].is_object()) {
    return error_response(400,
                          "workload: required, an object {namespace, pod} or {namespace, "
                          "labels, serviceAccount}");
  }
  const json& wj = in["workload"];
  json rj = in.contains("request") ? in["request"] : json::object();
  if (!rj.is_object()) return error_response(400, "request: must be an object");
  auto request = eval::parse_request(rj);
  if (!request.ok()) return error_response(400, request.error().message);
  if (!s.synced) return not_synced();

  const compile::DecisionTable* table = nullptr;
  compile::DecisionTable described;
  const bool by_pod =
      wj.contains("pod") && !wj.contains("labels") && !wj.contains("serviceAccount");
  if (by_pod) {
    if (!wj["pod"].is_string() || !wj.contains("namespace") || !wj["namespace"].is_string()) {
      return error_response(400, "workload: {namespace, pod} must both be strings");
    }
    const auto ns = wj["namespace"].get<std::string>();
    const auto pod = wj["pod"].get<std::string>();
    const auto* e = s.find(ns, pod);
    if (e == nullptr || e->table == nullptr) {
      return error_response(404, "the controller does not know pod " + ns + "/" + pod + " (yet)");
    }
    table = &e->table->table;
  } else {
    auto w = policy::parse_workload(wj);
    if (!w.ok()) return error_response(400, w.error().message);
    std::vector<const policy::Policy*> policies;
    if (s.policies) {
      policies.reserve(s.policies->size());
      for (const auto& [_, p] : *s.policies) policies.push_back(p.get());
    }
    described =
        compile::compile_table(std::span<const policy::Policy* const>(policies), *w, s.mesh);
    table = &described;
  }
  eval::PreparedRequest prepared;
  eval::prepare(*request, table->path_normalization, prepared);
  const auto d = eval::evaluate(*table, prepared);
  HttpResponse r;
  eval::append_decision_json(r.body, *table, d, prepared);
  r.headers = "X-Tollgate-Revision: " + std::to_string(s.revision) + "\r\n";
  return r;
}

HttpResponse Api::workloads(const publish::Snapshot& s) const {
  if (!s.synced) return not_synced();
  json list = json::array();
  for (const auto& [ns, view] : s.namespaces) {
    for (const auto& e : view->pods) {
      json w = {{"namespace", ns},
                {"pod", e.pod->name},
                {"labels", e.pod->shape->labels},
                {"serviceAccount", e.pod->shape->service_account}};
      json ips = json::array();
      e.pod->for_each_ip([&](std::string_view ip) { ips.push_back(std::string(ip)); });
      w["ips"] = std::move(ips);
      w["etag"] = e.table ? json(e.table->etag) : json(nullptr);
      w["policies"] = e.table ? json(e.table->table.policies) : json::array();
      list.push_back(std::move(w));
    }
  }
  auto r = json_response(200, dump(json{{"revision", s.revision}, {"workloads", list}}));
  r.headers = "X-Tollgate-Revision: " + std::to_string(s.revision) + "\r\n";
  return r;
}

HttpResponse Api::policy(const publish::Snapshot& s, std::string_view ns,
                         std::string_view name) const {
  if (!s.synced) return not_synced();
  const std::string key = std::string(ns) + "/" + std::string(name);
  const policy::Policy* p = nullptr;
  if (s.policies) {
    if (auto it = s.policies->find(key); it != s.policies->end()) p = it->second.get();
  }
  if (p == nullptr) {
    return error_response(404, "the controller does not know AuthorizationPolicy " + key);
  }
  json selected = json::array();
  std::vector<policy::Workload> workloads;
  for (const auto& [pns, view] : s.namespaces) {
    for (const auto& e : view->pods) {
      policy::Workload w = *e.pod->shape;
      w.name = e.pod->name;
      workloads.push_back(std::move(w));
      if (e.table == nullptr) continue;
      const auto& ps = e.table->table.policies;
      if (std::find(ps.begin(), ps.end(), key) != ps.end()) {
        selected.push_back({{"namespace", pns}, {"pod", e.pod->name}});
      }
    }
  }
  std::vector<const policy::Policy*> policies;
  policies.reserve(s.policies->size());
  for (const auto& [_, q] : *s.policies) policies.push_back(q.get());
  lint::Context in;
  in.policies = policies;
  in.workloads = workloads;
  in.service_accounts = s.service_accounts.get();
  in.namespaces = s.namespace_names.get();
  in.mesh = s.mesh;
  json validation = json::array();
  for (const auto& f : p->findings) validation.push_back(policy::finding_json(f));
  json findings = json::array();
  for (const auto& f : lint::lint_policy(*p, in)) findings.push_back(policy::finding_json(f));
  auto r = json_response(200, dump(json{{"policy", key},
                                        {"revision", s.revision},
                                        {"selected", selected},
                                        {"validation", validation},
                                        {"lint", findings}}));
  r.headers = "X-Tollgate-Revision: " + std::to_string(s.revision) + "\r\n";
  return r;
}

HttpResponse Api::readyz(const publish::Snapshot& s) const {
  if (options_.failures != nullptr && options_.failures->failed()) {
    return error_response(503, "a controller thread stopped (" + options_.failures->cause() +
                                   "); the controller is shutting down to be restarted");
  }
  if (!s.synced) {
    // Say why: each source's state (a manifest that cannot be read names itself there).
    HttpResponse r = not_synced();
    json sources = json::array();
    std::string why;
    for (const auto& h : s.health) {
      sources.push_back({{"kind", h.kind}, {"healthy", h.healthy}, {"message", h.message}});
      if (!h.healthy && why.find(h.message) == std::string::npos) {
        why += (why.empty() ? "" : "; ") + h.message;
      }
    }
    const std::string error =
        json::parse(r.body)["error"].get<std::string>() + (why.empty() ? "" : " (" + why + ")");
    r.body = dump(json{{"error", error}, {"sources", sources}});
    return r;
  }
  const auto now = std::chrono::system_clock::now();
  bool all_stale = !s.health.empty();
  for (const auto& h : s.health) {
    if (h.healthy || now - h.since < options_.staleness) all_stale = false;
  }
  if (all_stale) {
    return error_response(503, "every source has been failing for longer than " +
                                   std::to_string(options_.staleness.count()) +
                                   "s; the data may be stale");
  }
  json health = json::array();
  for (const auto& h : s.health) {
    health.push_back({{"kind", h.kind}, {"healthy", h.healthy}, {"message", h.message}});
  }
  return json_response(200, dump(json{{"ready", true},
                                      {"revision", s.revision},
                                      {"syncedAt", util::rfc3339(s.fresh_as_of(now))},
                                      {"sources", health}}));
}

Requirement requirement_of(const HttpRequest& r) {
  using Kind = Requirement::Kind;
  Requirement need;
  const auto segments = path_segments(r.target.substr(0, r.target.find('?')));
  if (!segments.ok()) return need;  // 400 follows, whoever asks
  const auto& seg = *segments;
  if (seg.size() < 3 || seg[1] != "v1") return need;
  if (seg[2] == "tables") {
    need.kind = Kind::kTable;
  } else if (seg[2] == "workloads") {
    need.kind = Kind::kOperator;
  } else if (seg[2] == "policies") {
    need.kind = Kind::kOperator;
    if (seg.size() == 5) need.ns = seg[3];
  } else if (seg[2] == "check") {
    need.kind = Kind::kOperator;
    // Not parsed when too deep for the parser's recursion: cluster-wide, and 400 follows.
    const json body = too_deep(r.body) ? json() : json::parse(r.body, nullptr, false);
    if (body.is_object() && body.contains("workload") && body["workload"].is_object()) {
      const json& w = body["workload"];
      auto ns = w.find("namespace");
      if (ns != w.end() && ns->is_string()) need.ns = ns->get<std::string>();
    }
  }
  return need;
}

}  // namespace tollgate::server
