// The fake API server's protocol helpers that need no state: query and resourceVersion
// parsing, kube-apiserver's validation of list options, which faults apply to what, and the
// Status bodies of faults and outages.
#include <charconv>
#include <string>
#include <string_view>

#include "test/support/fake_apiserver_internal.h"
#include "tollgate/util/strings.h"

namespace tollgate::testing::fake {

using WatchList = FakeApiServer::WatchList;

std::optional<std::uint64_t> parse_rv(const std::string& s) {
  std::uint64_t v = 0;
  const auto* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end) return std::nullopt;
  return v;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  // A malformed escape is kept as it is.
  auto decode = [](std::string_view v) {
    return util::percent_decode(v, true).value_or(std::string(v));
  };
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    const auto amp = q.find('&');
    const std::string_view part = q.substr(0, amp);
    const auto eq = part.find('=');
    if (!part.empty()) {
      out[decode(part.substr(0, eq))] =
          eq == std::string_view::npos ? "" : decode(part.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return out;
}

bool applies(Fault fault, bool watch) {
  switch (fault) {
    case Fault::kHttp401:
    case Fault::kHttp403:
    case Fault::kHttp429:
    case Fault::kHttp500:
    case Fault::kHttp410:
    case Fault::kDropBeforeResponse:
      return true;
    case Fault::kDropMidStream:
    case Fault::kGarbageLine:
    case Fault::kStall:
    case Fault::kErrorEvent410:
      return watch;
    case Fault::kDropAfterWrite:  // writes only (inject_write)
    case Fault::kHttp422:
      return false;
  }
  return false;
}

// The answer to a fault on a request, or nullopt for the faults that are not a status.
std::optional<std::pair<int, json>> fault_status(Fault fault) {
  switch (fault) {
    case Fault::kHttp401:
      return std::pair{401, status_body(401, "Unauthorized", "Unauthorized")};
    case Fault::kHttp403:
      return std::pair{403,
                       status_body(403, "Forbidden", "forbidden: injected by the fake apiserver")};
    case Fault::kHttp429:
      return std::pair{
          429, status_body(429, "TooManyRequests", "Too many requests, please try again later.")};
    case Fault::kHttp500:
      return std::pair{500, status_body(500, "InternalError",
                                        "Internal error occurred: injected by the fake apiserver")};
    case Fault::kHttp410:
      return std::pair{410, status_body(410, "Expired", "too old resource version (injected)")};
    case Fault::kHttp422:
      return std::pair{422, status_body(422, "Invalid",
                                        "AuthorizationPolicy.security.istio.io is invalid: "
                                        "status.conditions: Invalid value (injected)")};
    default:
      return std::nullopt;
  }
}

// The status an outage answers, with kube-apiserver's reason for it.
json unavailable_body(int code) {
  switch (code) {
    case 503:
      return status_body(503, "ServiceUnavailable",
                         "the server is currently unable to handle the request");
    case 500:
      return status_body(500, "InternalError",
                         "Internal error occurred: the fake apiserver is down");
    case 429:
      return status_body(429, "TooManyRequests", "Too many requests, please try again later.");
    case 504:
      return status_body(504, "Timeout",
                         "the server was unable to return a response in the time allotted");
    default:
      return status_body(code, "", "the fake apiserver is unavailable");
  }
}

// The field errors kube-apiserver's ValidateListOptions finds in sendInitialEvents and
// resourceVersionMatch; none from a server that knows neither (kIgnore).
std::vector<std::string> option_errors(bool watch, bool send_initial_events,
                                       const std::string& match, WatchList mode) {
  std::vector<std::string> errors;
  if (mode == WatchList::kIgnore) return errors;
  if (!watch) {
    if (send_initial_events) {
      errors.emplace_back("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list");
    }
    return errors;
  }
  if (send_initial_events) {
    if (match != "NotOlderThan") {
      errors.emplace_back(
          "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
          "resourceVersionMatch to NotOlderThan");
    }
    if (mode == WatchList::kRefuse) {
      errors.emplace_back(
          "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the "
          "WatchList feature gate is enabled");
    }
  }
  if (!match.empty()) {
    if (!send_initial_events) {
      errors.emplace_back(
          "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless "
          "sendInitialEvents is provided");
    }
    if (match != "NotOlderThan") {
      errors.emplace_back("resourceVersionMatch: Unsupported value: \"" + match +
                          "\": supported values: \"NotOlderThan\"");
    }
  }
  return errors;
}

}  // namespace tollgate::testing::fake
