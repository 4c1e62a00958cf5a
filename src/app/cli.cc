#include "tollgate/app/cli.h"

#include <CLI/CLI.hpp>
#include <iostream>

#include "tollgate/app/commands.h"
#include "tollgate/util/log.h"

namespace tollgate::app {

namespace {

void add_max_manifest_bytes(CLI::App& cmd, std::uint64_t& value) {
  cmd.add_option("--max-manifest-bytes", value,
                 "the largest manifest file read; a larger one is an error (for run: not ready "
                 "at start, the last good version later)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
}

// `run`'s status writing and leader election (docs/operations.md).
void add_leadership(CLI::App& rn, RunOptions& run) {
  rn.add_option("--write-status", run.write_status,
                "write conditions and Events on AuthorizationPolicies (with a cluster)")
      ->capture_default_str();
  rn.add_option("--leader-elect", run.leader_elect,
                "only the holder of a Lease writes; false: this replica always writes")
      ->capture_default_str();
  rn.add_option("--lease-name", run.lease_name, "the Lease's name")->capture_default_str();
  rn.add_option("--lease-namespace", run.lease_namespace,
                "the Lease's namespace (default: $POD_NAMESPACE, else tollgate-system)");
  rn.add_option("--identity", run.identity,
                "this replica's name in the Lease (default: $POD_NAME, else host-pid)");
  rn.add_option("--lease-duration", run.lease_duration,
                "seconds a candidate waits, by its own clock, for an unrenewed Lease")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 3600.0));
  rn.add_option("--renew-deadline", run.renew_deadline,
                "seconds the leader keeps writing without a successful renewal")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  rn.add_option("--retry-period", run.retry_period, "seconds between Lease reads and renewals")
      ->capture_default_str()
      ->check(CLI::Range(0.05, 3600.0));
}

// `run`'s options.
CLI::App* add_run(CLI::App& app, RunOptions& run) {
  auto* rn = app.add_subcommand("run", "Run the controller: watch a cluster or manifests");
  rn->add_option("--manifests", run.manifests,
                 "manifest files or directories read as the cluster (watched for changes)");
  add_max_manifest_bytes(*rn, run.max_manifest_bytes);
  rn->add_option("--kubeconfig", run.kubeconfig, "watch the cluster this kubeconfig names");
  rn->add_flag("--once", run.once, "print every workload's table once synced, then exit");
  rn->add_option("--root-namespace", run.root_namespace, "Istio's root namespace")
      ->capture_default_str();
  rn->add_option("--trust-domain", run.trust_domain, "the mesh's trust domain")
      ->capture_default_str();
  rn->add_option("--trust-domain-alias", run.trust_domain_aliases, "a trust domain alias");
  rn->add_option("--mesh", run.mesh, "mesh settings as JSON, or @FILE");
  rn->add_option("--listen", run.listen, "serve the decision API on ADDR:PORT (port 0: any)")
      ->capture_default_str();
  rn->add_option("--port-file", run.port_file, "write the bound port to this file once listening");
  rn->add_option("--tls-cert", run.tls_cert, "serve TLS with this certificate chain (PEM)");
  rn->add_option("--tls-key", run.tls_key, "the TLS private key (PEM)");
  rn->add_option("--tls-client-ca", run.tls_client_ca,
                 "require client certificates signed by this CA (PEM)");
  rn->add_option("--max-wait", run.max_wait_seconds, "long-poll cap in seconds")
      ->capture_default_str()
      ->check(CLI::Range(0, 3600));
  rn->add_option("--staleness", run.staleness_seconds,
                 "/readyz fails once every source has been failing this many seconds")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400 * 7));
  rn->add_option("--http-threads", run.http_threads, "HTTP worker threads (0: one per core)")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  rn->add_option("--auth", run.auth,
                 "who may read tables and ask /v1/check: kubernetes (service-account tokens, "
                 "RBAC) or none (anyone); default kubernetes with a cluster, none with --manifests")
      ->check(CLI::IsMember({"kubernetes", "none"}));
  rn->add_option("--token-audience", run.audience,
                 "the audience agents' tokens must be minted for (--auth kubernetes)")
      ->capture_default_str();
  add_leadership(*rn, run);
  return rn;
}

// `agent`'s options (docs/agent.md).
CLI::App* add_agent(CLI::App& app, AgentOptions& a) {
  auto* ag = app.add_subcommand("agent", "Run the sidecar agent: enforce the pod's table");
  ag->add_option("--controller", a.controller, "the controller's URL (http:// or https://)")
      ->required();
  ag->add_option("--controller-ca", a.controller_ca,
                 "CA certificates (PEM) for an https:// controller");
  ag->add_option("--token-file", a.token_file,
                 "a bearer token presented to the controller (re-read when it changes)");
  ag->add_option("--namespace", a.namespace_, "the pod's namespace (default: $POD_NAMESPACE)");
  ag->add_option("--pod", a.pod, "the pod's name (default: $POD_NAME)");
  ag->add_option("--listen", a.listen, "serve the authorization endpoints on ADDR:PORT")
      ->capture_default_str();
  ag->add_option("--state-dir", a.state_dir,
                 "keep the last good table here across restarts (an emptyDir)")
      ->required();
  ag->add_option("--port", a.port, "the workload port, when the proxy sends none")
      ->check(CLI::Range(1, 65535));
  ag->add_option("--wait", a.wait_seconds, "long-poll wait asked of the controller, seconds")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  ag->add_option("--http-threads", a.http_threads, "HTTP worker threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  ag->add_option("--port-file", a.port_file, "write the bound HTTP port to this file");
  ag->add_option("--decision-log", a.decision_log, "append every decision to FILE as JSON lines");
  ag->add_option("--decision-log-header", a.decision_log_headers,
                 "a header whose value the decision log keeps (repeatable; others: names only)");
  ag->add_option("--grpc-listen", a.grpc_listen,
                 "serve Envoy's gRPC ext_authz (and gRPC health) on ADDR:PORT");
  ag->add_option("--grpc-port-file", a.grpc_port_file, "write the bound gRPC port to this file");
  ag->add_option("--grpc-threads", a.grpc_threads, "gRPC threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  ag->add_option("--jwt-metadata-key", a.jwt_metadata_key,
                 "the dynamic-metadata namespace holding the validated JWT payload")
      ->capture_default_str();
  ag->add_option("--jwt-payload-key", a.jwt_payload_key,
                 "the jwt_authn provider's payload_in_metadata (default: the only one)");
  ag->add_option("--grpc-provider-name", a.grpc_provider_name,
                 "the mesh extension provider name routing to this agent (Istio CUSTOM)");
  return ag;
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"tollgate: Istio AuthorizationPolicy decisions, compiled and served"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tollgate 0.1.0");
  app.fallthrough();  // --log-level may follow the subcommand
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug, info, warn or error (JSON lines on stderr)")
      ->capture_default_str()
      ->check(CLI::IsMember({"debug", "info", "warn", "warning", "error"}));

  bool jsonl = false;
  auto* eval = app.add_subcommand(
      "eval", "Evaluate {policies, workload, request, mesh} objects read from stdin");
  eval->add_flag("--jsonl", jsonl, "one JSON object per line in, one decision per line out");
  std::size_t max_input_bytes = kDefaultMaxInputBytes;
  eval->add_option("--max-input-bytes", max_input_bytes,
                   "the most one input may take (one line with --jsonl); longer ones are errors")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);

  CheckOptions check;
  auto* chk = app.add_subcommand("check", "Decide one request against manifests, explained");
  chk->add_option("-f,--filename", check.files, "manifest files or directories")->required();
  add_max_manifest_bytes(*chk, check.max_manifest_bytes);
  chk->add_option("--workload", check.workload,
                  "NAMESPACE/POD (a pod or workload in the manifests), or "
                  "NAMESPACE/LABEL=VALUE,.../SERVICEACCOUNT")
      ->required();
  chk->add_option("--request", check.request, "the request as JSON (docs/api.md), or @FILE")
      ->required();
  chk->add_option("--mesh", check.mesh, "mesh settings as JSON, or @FILE");
  chk->add_option("-o,--output", check.output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));

  LintOptions lint;
  auto* lnt = app.add_subcommand("lint", "Report policies that cannot do what they mean");
  lnt->add_option("-f,--filename", lint.files, "manifest files or directories")->required();
  add_max_manifest_bytes(*lnt, lint.max_manifest_bytes);
  lnt->add_option("--mesh", lint.mesh, "mesh settings as JSON, or @FILE");
  lnt->add_option("-o,--output", lint.output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));

  RunOptions run;
  auto* rn = add_run(app, run);
  AgentOptions agent;
  auto* ag = add_agent(app, agent);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  util::set_log_level(*util::parse_log_level(log_level));
  try {
    if (*eval) {
      std::ios::sync_with_stdio(false);
      return run_eval(std::cin, std::cout, jsonl, max_input_bytes);
    }
    if (*chk) return run_check(check);
    if (*lnt) return run_lint(lint);
    if (*rn) return run_controller(run);
    if (*ag) return run_agent(agent);
  } catch (const std::exception& e) {
    std::cerr << "tollgate: " << e.what() << "\n";
    return 2;
  }
  return 2;
}

}  // namespace tollgate::app
