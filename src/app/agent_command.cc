// `tollgate agent`: the enforcement point beside each pod (docs/agent.md). The sync thread
// keeps the pod's table from the controller (or the state directory); the HTTP endpoints and
// the optional gRPC ext_authz listener decide with it until SIGTERM/SIGINT. A sync thread that
// dies makes it drain and exit 1 (restarted, it restores the saved table).
#include <filesystem>
#include <iostream>
#include <memory>

#include "tollgate/agent/authorizer.h"
#include "tollgate/agent/decision_log.h"
#include "tollgate/agent/grpc_server.h"
#include "tollgate/agent/http_service.h"
#include "tollgate/agent/metrics.h"
#include "tollgate/agent/observe.h"
#include "tollgate/agent/sync.h"
#include "tollgate/app/commands.h"
#include "tollgate/app/process.h"
#include "tollgate/http/server.h"
#include "tollgate/k8s/config.h"
#include "tollgate/k8s/transport.h"
#include "tollgate/util/file.h"
#include "tollgate/util/log.h"

namespace tollgate::app {
namespace {

constexpr std::size_t kMaxCaBytes = std::size_t{1} << 20;

// A Kubernetes object name: what can safely go into /v1/tables/{ns}/{pod}.
bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  for (const char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  }
  return true;
}

util::Result<k8s::ClusterConfig> controller_config(const AgentOptions& o) {
  k8s::ClusterConfig c;
  c.server = o.controller;
  c.description = "the controller " + o.controller;
  if (!o.controller_ca.empty()) {
    auto ca = util::read_file(o.controller_ca, kMaxCaBytes);
    if (!ca.ok()) return util::make_error("--controller-ca: " + ca.error().message);
    c.ca_pem = std::move(*ca);
  }
  c.token_file = o.token_file;
  auto parsed = k8s::parse_server(std::move(c));
  if (!parsed.ok()) return util::make_error("--controller: " + parsed.error().message);
  return parsed;
}

// The pod, from the flags or the downward API's environment.
util::Status resolve_pod(AgentOptions& o) {
  o.namespace_ = flag_or_env(o.namespace_, "POD_NAMESPACE");
  o.pod = flag_or_env(o.pod, "POD_NAME");
  if (!valid_name(o.namespace_) || !valid_name(o.pod)) {
    return util::make_error(
        "the pod is not known: give --namespace and --pod, or set POD_NAMESPACE and POD_NAME "
        "(the downward API); got \"" +
        o.namespace_ + "/" + o.pod + "\"");
  }
  return util::ok();
}

// What the agent needs before any thread starts; every flag's problem is an error here.
struct Prepared {
  std::unique_ptr<k8s::Transport> transport;
  std::unique_ptr<agent::DecisionLog> decision_log;  // null without --decision-log
};

util::Result<Prepared> prepare(const AgentOptions& o) {
  TOLLGATE_TRY(config, controller_config(o));
  auto tokens = o.token_file.empty() ? nullptr : std::make_shared<k8s::TokenSource>(config);
  if (tokens && tokens->token().empty()) {
    return util::make_error("--token-file " + o.token_file + ": " +
                            (tokens->last_error().empty() ? "empty" : tokens->last_error()));
  }
  Prepared p;
  TOLLGATE_TRY(transport, k8s::make_transport(config, tokens));
  p.transport = std::move(transport);
  if (!o.state_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.state_dir, ec);
    if (ec) return util::make_error("--state-dir " + o.state_dir + ": " + ec.message());
  }
  if (!o.decision_log.empty()) {
    TOLLGATE_TRY(log, agent::DecisionLog::open(o.decision_log, o.decision_log_headers));
    p.decision_log = std::move(log);
  }
  return p;
}

// --grpc-listen: Envoy's ext_authz over gRPC, answered by the same authorizer and observer.
util::Status start_grpc(const AgentOptions& o, agent::GrpcServer& grpc,
                        agent::Authorizer& authorizer, agent::DecisionObserver& observer) {
  if (o.grpc_listen.empty()) return util::ok();
  agent::GrpcServerOptions go;
  go.threads = o.grpc_threads;
  go.mapping.jwt_metadata_namespace = o.jwt_metadata_key;
  go.mapping.jwt_payload_key = o.jwt_payload_key;
  go.mapping.self_provider = o.grpc_provider_name;
  go.on_decision = [&observer](const eval::Request* r, const agent::Answer& a,
                               std::chrono::nanoseconds elapsed) {
    observer.observe(r, a, elapsed);
  };
  auto port = grpc.start(o.grpc_listen, authorizer, go);
  if (!port.ok())
    return util::make_error("--grpc-listen " + o.grpc_listen + ": " + port.error().message);
  write_port_file(o.grpc_port_file, *port);
  return util::ok();
}

int fail_start(const std::string& message) {
  std::cerr << "tollgate agent: " << message << "\n";
  return 2;
}

}  // namespace

int run_agent(const AgentOptions& in) {
  AgentOptions o = in;
  if (auto pod = resolve_pod(o); !pod.ok()) return fail_start(pod.error().message);
  auto prepared = prepare(o);
  if (!prepared.ok()) return fail_start(prepared.error().message);

  // Before any thread starts; a sync thread that dies wakes signals.wait() below.
  ShutdownSignals signals;
  util::ThreadFailures failures;
  signals.wake_on_failure(failures);
  agent::Authorizer authorizer;
  agent::AgentMetrics metrics;
  agent::DecisionObserver observer(metrics, authorizer, prepared->decision_log.get());
  agent::SyncOptions so;
  so.namespace_ = o.namespace_;
  so.pod = o.pod;
  so.state_dir = o.state_dir;
  so.wait = std::chrono::seconds(o.wait_seconds);
  so.failures = &failures;
  agent::Syncer syncer(so, std::move(prepared->transport), authorizer, metrics);

  agent::MappingOptions mapping;
  if (o.port > 0) mapping.port = o.port;
  agent::HttpService service(authorizer, metrics, observer, mapping,
                             [&syncer] { return syncer.status(); });
  http::ServerOptions ho;
  ho.listen = o.listen;
  ho.threads = o.http_threads;
  http::Server server(ho, service);
  if (auto started = server.start(); !started.ok()) return fail_start(started.error().message);
  agent::GrpcServer grpc;
  if (auto started = start_grpc(o, grpc, authorizer, observer); !started.ok()) {
    return fail_start(started.error().message);
  }
  write_port_file(o.port_file, server.port());
  util::log_info("agent started", {{"pod", o.namespace_ + "/" + o.pod},
                                   {"controller", o.controller},
                                   {"listen", o.listen},
                                   {"port", std::to_string(server.port())},
                                   {"grpc", o.grpc_listen},
                                   {"stateDir", o.state_dir}});
  syncer.start();

  signals.wait(failures);
  // Stop taking requests first; the table stays active until the last answer is out.
  grpc.stop();
  server.shutdown();
  syncer.stop();
  return failures.failed() ? 1 : 0;
}

}  // namespace tollgate::app
