// The endpoints of docs/api.md#endpoints as plain functions of (request, snapshot) ->
// response, with no networking: the HTTP sessions in server.cc call them. Api is immutable
// after construction apart from the thread-safe Metrics it reports to; thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/http/message.h"
#include "tollgate/publish/snapshot.h"
#include "tollgate/server/metrics.h"
#include "tollgate/server/waiters.h"
#include "tollgate/util/thread_failure.h"

namespace tollgate::server {

struct HttpRequest {
  std::string_view method;  // "GET"
  std::string_view target;  // "/v1/tables/default/web-1?wait=5"
  std::string_view if_none_match;
  std::string_view prefer;
  std::string_view body;
};

// An answer: the HTTP core's response (status, extra headers, a body owned or viewed).
using HttpResponse = http::Response;

HttpResponse error_response(int status, std::string_view message);

// A table request: by namespace and pod, or by pod IP; the ETag the client has; how long it
// may wait for a change.
struct TableQuery {
  std::string ns, pod, ip;
  std::string if_none_match;
  std::chrono::seconds wait{0};
};

struct Routed {
  Endpoint endpoint = Endpoint::kOther;
  std::optional<TableQuery> table;  // a table endpoint: answer with Api::table()
  HttpResponse response;            // otherwise the answer
};

struct QueryParams;  // what a request's query string says (api.cc)

struct ApiOptions {
  std::chrono::seconds max_wait{300};
  std::chrono::seconds staleness{300};
  const util::ThreadFailures* failures = nullptr;  // a dead controller thread: /readyz 503
  std::function<auth::Reviewer::Stats()> reviews;  // --auth kubernetes: for /metrics
  std::function<std::string()> extra_metrics;      // appended to /metrics; may be null
};

class Api {
 public:
  using SourceStatsFn = std::function<std::vector<SourceStats>()>;
  Api(ApiOptions options, WaitList& waiters, Metrics& metrics);

  // Routes and answers everything but tables.
  Routed route(const HttpRequest& r, std::size_t connections, const SourceStatsFn& sources) const;

  struct TableAnswer {
    HttpResponse response;
    std::string park_key;   // not empty: the client has the current table; park on this pod
    std::string park_etag;  // ... whose table has this ETag
  };
  // Answers `q` from `s`. With `may_park` and a wait, an unchanged table gives a park_key
  // instead of a 304.
  TableAnswer table(const std::shared_ptr<const publish::Snapshot>& s, const TableQuery& q,
                    bool may_park) const;

 private:
  Routed route_table(const HttpRequest& r, std::string_view path,
                     const std::vector<std::string>& segments, const QueryParams& params) const;
  HttpResponse check(const publish::Snapshot& s, std::string_view body) const;
  HttpResponse workloads(const publish::Snapshot& s) const;
  HttpResponse policy(const publish::Snapshot& s, std::string_view ns, std::string_view name) const;
  HttpResponse readyz(const publish::Snapshot& s) const;

  ApiOptions options_;
  WaitList& waiters_;
  Metrics& metrics_;
};

// What an endpoint asks of its caller.
struct Requirement {
  enum class Kind : std::uint8_t {
    kOpen,      // /healthz, /readyz, /metrics, and what is not an endpoint
    kTable,     // /v1/tables/...: an identity; the pod rule is checked against the snapshot
    kOperator,  // /v1/check, /v1/workloads, /v1/policies/...: may list the policies
  };
  Kind kind = Kind::kOpen;
  std::string ns;  // kOperator: the namespace to be allowed in ("" = cluster-wide)
};

// What `r` asks of its caller: by its path, and for /v1/check the workload's namespace in
// the body (cluster-wide when the body names none or cannot be read).
Requirement requirement_of(const HttpRequest& r);

// Does an If-None-Match header value match `etag` (weak comparison, lists and "*")?
bool etag_matches(std::string_view if_none_match, std::string_view etag);

}  // namespace tollgate::server
