// Subcommand entry points behind the CLI parser (app module internals).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tollgate/source/manifests.h"
#include "tollgate/util/result.h"

namespace tollgate::app {

// A JSON command-line argument: the text itself, or @FILE to read it; empty gives null.
util::Result<nlohmann::json> json_arg(const std::string& text, const char* what);

struct CheckOptions {
  std::vector<std::string> files;
  std::uint64_t max_manifest_bytes = source::kDefaultMaxFileBytes;
  std::string workload;  // "ns/pod" or "ns/k=v,k2=v2/serviceAccount"
  std::string request;   // JSON, or @file
  std::string mesh;      // JSON, or @file
  std::string output = "text";
};
int run_check(const CheckOptions& o);

struct LintOptions {
  std::vector<std::string> files;
  std::uint64_t max_manifest_bytes = source::kDefaultMaxFileBytes;
  std::string mesh;
  std::string output = "text";
};
int run_lint(const LintOptions& o);

struct RunOptions {
  std::vector<std::string> manifests;  // files or directories (the embedded default)
  std::uint64_t max_manifest_bytes = source::kDefaultMaxFileBytes;
  std::string kubeconfig;  // watch a cluster through this kubeconfig instead
  bool once = false;       // print every table once synced, then exit
  std::string root_namespace = "istio-system";
  std::string trust_domain = "cluster.local";
  std::vector<std::string> trust_domain_aliases;
  std::string mesh;  // JSON, or @file; flags above override
  // The decision service (not with --once).
  std::string listen = "127.0.0.1:8080";
  std::string port_file;  // written with the bound port once listening (tests, scripts)
  std::string tls_cert, tls_key, tls_client_ca;
  int max_wait_seconds = 300;
  int staleness_seconds = 300;
  int http_threads = 0;  // 0: one per core
  // Who may read which table (docs/security.md): "kubernetes" (TokenReview and
  // SubjectAccessReview), "none" (anyone). Empty: kubernetes with a cluster, none with
  // --manifests.
  std::string auth;
  std::string audience = "tollgate";  // the audience agents' tokens must be minted for
  // Status and Events on each policy, written by the leader only (docs/operations.md).
  bool write_status = true;
  bool leader_elect = true;
  std::string lease_name = "tollgate";
  std::string lease_namespace;  // empty: $POD_NAMESPACE, else tollgate-system
  std::string identity;         // empty: $POD_NAME, else host-pid
  double lease_duration = 15, renew_deadline = 10, retry_period = 2;  // seconds
};
int run_controller(const RunOptions& o);

struct AgentOptions {
  std::string controller;       // URL of `tollgate run`
  std::string controller_ca;    // CA file for an https:// controller
  std::string token_file;       // bearer token presented to the controller, re-read as it rotates
  std::string namespace_, pod;  // default: $POD_NAMESPACE, $POD_NAME
  std::string listen = "127.0.0.1:15010";
  std::string state_dir;
  int port = 0;  // the workload port when the proxy sends none; 0: none
  int wait_seconds = 300;
  int http_threads = 1;
  std::string port_file;  // written with the bound HTTP port once listening
  std::string decision_log;
  std::vector<std::string> decision_log_headers;
  // gRPC ext_authz (docs/agent.md#grpc-ext_authz); off without grpc_listen.
  std::string grpc_listen;
  std::string grpc_port_file;
  int grpc_threads = 1;
  std::string jwt_metadata_key = "envoy.filters.http.jwt_authn";
  std::string jwt_payload_key;
  std::string grpc_provider_name;
};
int run_agent(const AgentOptions& in);

}  // namespace tollgate::app
