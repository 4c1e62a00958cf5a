// `tollgate agent`: the enforcement point beside each pod (docs/agent.md). The sync thread
// keeps the pod's table from the controller (or the state directory); the HTTP endpoints and
// the optional gRPC ext_authz listener decide with it until SIGTERM/SIGINT.
#include <csignal>
#include <filesystem>
#include <fstream>
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

std::string env_or(const std::string& value, const char* var) {
  if (!value.empty()) return value;
  const char* v = std::getenv(var);  // NOLINT(concurrency-mt-unsafe): before any thread
  return v != nullptr ? std::string(v) : std::string();
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

void write_port_file(const std::string& path, int port) {
  if (path.empty()) return;
  auto written = util::write_file_atomically(path, std::to_string(port) + "\n");
  if (!written.ok())
    util::log_warn("cannot write the port file", {{"error", written.error().message}});
}

}  // namespace

int run_agent(const AgentOptions& in) {
  AgentOptions o = in;
  o.namespace_ = env_or(o.namespace_, "POD_NAMESPACE");
  o.pod = env_or(o.pod, "POD_NAME");
  if (!valid_name(o.namespace_) || !valid_name(o.pod)) {
    std::cerr << "tollgate agent: the pod is not known: give --namespace and --pod, or set "
                 "POD_NAMESPACE and POD_NAME (the downward API); got \""
              << o.namespace_ << "/" << o.pod << "\"\n";
    return 2;
  }
  auto config = controller_config(o);
  if (!config.ok()) {
    std::cerr << "tollgate agent: " << config.error().message << "\n";
    return 2;
  }
  auto tokens = o.token_file.empty() ? nullptr : std::make_shared<k8s::TokenSource>(*config);
  if (tokens && tokens->token().empty()) {
    std::cerr << "tollgate agent: --token-file " << o.token_file << ": "
              << (tokens->last_error().empty() ? "empty" : tokens->last_error()) << "\n";
    return 2;
  }
  auto transport = k8s::make_transport(*config, tokens);
  if (!transport.ok()) {
    std::cerr << "tollgate agent: " << transport.error().message << "\n";
    return 2;
  }
  if (!o.state_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.state_dir, ec);
    if (ec) {
      std::cerr << "tollgate agent: --state-dir " << o.state_dir << ": " << ec.message() << "\n";
      return 2;
    }
  }
  std::unique_ptr<agent::DecisionLog> decision_log;
  if (!o.decision_log.empty()) {
    auto opened = agent::DecisionLog::open(o.decision_log, o.decision_log_headers);
    if (!opened.ok()) {
      std::cerr << "tollgate agent: " << opened.error().message << "\n";
      return 2;
    }
    decision_log = std::move(*opened);
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  agent::Authorizer authorizer;
  agent::AgentMetrics metrics;
  agent::DecisionObserver observer(metrics, authorizer, decision_log.get());
  agent::SyncOptions so;
  so.namespace_ = o.namespace_;
  so.pod = o.pod;
  so.state_dir = o.state_dir;
  so.wait = std::chrono::seconds(o.wait_seconds);
  agent::Syncer syncer(so, std::move(*transport), authorizer, metrics);

  agent::MappingOptions mapping;
  if (o.port > 0) mapping.port = o.port;
  agent::HttpService service(authorizer, metrics, observer, mapping,
                             [&syncer] { return syncer.status(); });
  http::ServerOptions ho;
  ho.listen = o.listen;
  ho.threads = o.http_threads;
  http::Server server(ho, service);
  auto started = server.start();
  if (!started.ok()) {
    std::cerr << "tollgate agent: " << started.error().message << "\n";
    return 2;
  }
  agent::GrpcServer grpc;
  if (!o.grpc_listen.empty()) {
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
    if (!port.ok()) {
      std::cerr << "tollgate agent: --grpc-listen " << o.grpc_listen << ": " << port.error().message
                << "\n";
      return 2;
    }
    write_port_file(o.grpc_port_file, *port);
  }
  write_port_file(o.port_file, server.port());
  util::log_info("agent started", {{"pod", o.namespace_ + "/" + o.pod},
                                   {"controller", o.controller},
                                   {"listen", o.listen},
                                   {"port", std::to_string(server.port())},
                                   {"grpc", o.grpc_listen},
                                   {"stateDir", o.state_dir}});
  syncer.start();

  int sig = 0;
  sigwait(&signals, &sig);
  util::log_info("shutting down", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  // Stop taking requests first; the table stays active until the last answer is out.
  grpc.stop();
  server.shutdown();
  syncer.stop();
  return 0;
}

}  // namespace tollgate::app
