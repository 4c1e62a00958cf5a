// The request shape of docs/api.md#the-request, parsed, and its prepared form (normalized
// path, parsed IPs, lower-cased host) that evaluation reads. Plain values; thread-compatible.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tollgate/policy/model.h"
#include "tollgate/policy/values.h"
#include "tollgate/util/result.h"

namespace tollgate::eval {

struct Request {  // NOLINT(bugprone-exception-escape): json() does not throw
  bool tcp = false;
  std::optional<std::string> principal;  // peer identity without "spiffe://"; absent = plaintext
  std::optional<std::string> source_ip;
  std::optional<std::string> remote_ip;  // defaults to source_ip
  std::optional<std::string> request_principal;
  nlohmann::json jwt_claims;  // null = no JWT payload
  std::vector<std::string> space_delimited_claims;
  std::optional<std::string> method, path, host, sni, destination_ip;
  std::optional<int> port;
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case name, joined value
  nlohmann::json dynamic_metadata;                           // {"<filter>": {"<key>": v}}
  std::optional<std::string> ext_authz_default;              // "ALLOW" | "DENY"
  std::map<std::string, std::string> ext_authz_by_provider;
};

// Parses the request object of docs/api.md; errors name the field ("request.port: must be
// ..."). A requestPrincipal that disagrees with jwtClaims' iss/sub is an error.
util::Result<Request> parse_request(const nlohmann::json& j);

// What is wrong when `r` gives both requestPrincipal and jwtClaims and they disagree (the
// principal is not the payload's iss + "/" + sub); nullopt when they agree or one is absent.
// prepare() rejects such a request (denied) for callers that built it without parse_request.
std::optional<std::string> request_principal_conflict(const Request& r);

// RFC 3986 normalization as Envoy applies it before authorization
// (docs/semantics.md#path-normalization).
// `full` is the request's path with its query. Returns the normalized path (query kept) or
// nullopt when Envoy rejects the path (400).
std::optional<std::string> normalize_path(std::string_view full, policy::PathNormalization n);

// Holds views into itself: filled in place by prepare(), never copied.
struct PreparedRequest {
  PreparedRequest() = default;
  PreparedRequest(const PreparedRequest&) = delete;
  PreparedRequest& operator=(const PreparedRequest&) = delete;

  const Request* request = nullptr;
  bool http = true;
  bool peer = false;
  std::string uri;                // "spiffe://" + principal
  std::string_view principal;     // into uri
  std::string_view trust_domain;  // principal up to its first '/' (empty if none)
  bool has_source_ip = false, has_remote_ip = false, has_destination_ip = false;
  policy::IpAddress source_ip, remote_ip, destination_ip;
  bool jwt = false;
  const std::string* iss = nullptr;  // string claims, or split request principal
  const std::string* sub = nullptr;
  std::string iss_storage, sub_storage;
  std::string iss_sub_key;  // iss + '\0' + sub when both exist
  bool has_host = false;
  std::string host;  // lower-cased :authority
  bool has_path = false;
  std::string path_with_query;  // normalized
  std::string_view path;        // normalized, without query
  std::string port;             // decimal, empty if none
  int port_number = -1;
  // hash_bytes() of the attributes most rules test, computed once per request.
  std::uint64_t principal_hash = 0, trust_domain_hash = 0, method_hash = 0, host_hash = 0,
                path_hash = 0, iss_sub_hash = 0;
  // Why the request is denied before authorization: Envoy answers 400 (a %00 in the path), or
  // its requestPrincipal contradicts its jwtClaims.
  std::optional<std::string> rejected;
};

// `n` is the table's path normalization.
void prepare(const Request& r, policy::PathNormalization n, PreparedRequest& out);

}  // namespace tollgate::eval
