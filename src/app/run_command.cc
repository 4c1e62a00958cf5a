// `tollgate run`: the controller. Sources feed the index thread, which publishes snapshots;
// the decision service (server module) serves them until SIGTERM/SIGINT. With --once, every
// table is printed as a JSON line on stdout once synced, and nothing is served. A controller
// thread that dies turns /readyz to 503 and wakes the main thread (SIGUSR1 into its sigwait):
// it drains as on SIGTERM and exits 1.
#include <iostream>
#include <memory>
#include <optional>
#include <ostream>

#include <unistd.h>

#include <cmath>

#include "tollgate/app/cluster_source.h"
#include "tollgate/app/commands.h"
#include "tollgate/app/leadership.h"
#include "tollgate/app/process.h"
#include "tollgate/auth/reviewer.h"
#include "tollgate/k8s/transport.h"
#include "tollgate/policy/parse.h"
#include "tollgate/publish/publisher.h"
#include "tollgate/server/server.h"
#include "tollgate/source/directory.h"
#include "tollgate/util/json_text.h"
#include "tollgate/util/log.h"

namespace tollgate::app {

namespace {

util::Result<policy::MeshConfig> mesh_from(const RunOptions& o) {
  TOLLGATE_TRY(j, json_arg(o.mesh, "--mesh"));
  policy::MeshConfig mesh;
  if (!j.is_null()) {
    TOLLGATE_TRY(m, policy::parse_mesh(j));
    mesh = std::move(m);
  }
  if (o.root_namespace != "istio-system" || mesh.root_namespace.empty()) {
    mesh.root_namespace = o.root_namespace;
  }
  if (o.trust_domain != "cluster.local") mesh.trust_domain = o.trust_domain;
  for (const auto& a : o.trust_domain_aliases) mesh.trust_domain_aliases.push_back(a);
  return mesh;
}

void print_pod(std::ostream& out, const publish::Snapshot& s, const std::string& ns,
               const publish::PodEntry& e) {
  std::string line = "{\"revision\":" + std::to_string(s.revision) + ",\"namespace\":";
  util::append_json_string(line, ns);
  line += ",\"pod\":";
  util::append_json_string(line, e.pod->name);
  if (e.table) {
    line += ",\"etag\":";
    util::append_json_string(line, e.table->etag);
    line += ",\"table\":";
    line += e.table->wire;
  } else {
    line += ",\"table\":null";
  }
  line += "}\n";
  out << line;
}

// --auth: who may read which table. kubernetes needs a cluster to review tokens with; none
// is the default only with --manifests, and said loudly otherwise.
util::Result<std::shared_ptr<server::Access>> access_control(
    const RunOptions& o, const std::optional<k8s::ClusterConfig>& cluster) {
  if (o.once) return std::shared_ptr<server::Access>();  // nothing is served
  const std::string mode = o.auth.empty() ? (cluster ? "kubernetes" : "none") : o.auth;
  if (mode == "none") {
    if (cluster) {
      util::log_warn(
          "--auth none: anyone who can reach the controller reads every pod's table "
          "and may ask /v1/check; keep it reachable only from the agents "
          "(docs/security.md)",
          {});
    }
    return std::shared_ptr<server::Access>();
  }
  if (!cluster) {
    return util::make_error(
        "--auth kubernetes needs a cluster to review tokens with; with --manifests use --auth "
        "none");
  }
  auto tokens = std::make_shared<k8s::TokenSource>(*cluster);
  auth::ReviewerOptions ro;
  ro.audience = o.audience;
  auto reviewer = std::make_shared<auth::Reviewer>(
      [config = *cluster, tokens]() { return k8s::make_transport(config, tokens); }, ro);
  util::log_info("access control: kubernetes", {{"audience", o.audience}});
  return std::make_shared<server::Access>(std::move(reviewer));
}

std::chrono::milliseconds millis(double seconds) {
  return std::chrono::milliseconds(std::llround(seconds * 1000.0));
}

// --write-status and the election flags, checked as client-go checks them.
util::Result<LeadershipOptions> leadership_options(const RunOptions& o,
                                                   const policy::MeshConfig& mesh,
                                                   util::ThreadFailures& failures) {
  if (o.lease_duration <= o.renew_deadline) {
    return util::make_error("--lease-duration must be greater than --renew-deadline");
  }
  if (o.renew_deadline <= 1.2 * o.retry_period) {
    return util::make_error("--renew-deadline must be greater than 1.2 x --retry-period");
  }
  LeadershipOptions lo;
  lo.leader_elect = o.leader_elect;
  lo.failures = &failures;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  lo.leader.election.identity =
      flag_or_env(o.identity, "POD_NAME", std::string(host) + "-" + std::to_string(::getpid()));
  lo.leader.election.lease_duration = millis(o.lease_duration);
  lo.leader.election.renew_deadline = millis(o.renew_deadline);
  lo.leader.election.retry_period = millis(o.retry_period);
  lo.leader.lease_name = o.lease_name;
  lo.leader.lease_namespace = flag_or_env(o.lease_namespace, "POD_NAMESPACE", "tollgate-system");
  lo.writer.mesh = mesh;
  lo.writer.event_options.instance = lo.leader.election.identity;
  return lo;
}

std::unique_ptr<server::Server> start_service(const RunOptions& o, publish::Publisher& publisher,
                                              const util::ThreadFailures& failures,
                                              std::shared_ptr<server::Access> access,
                                              const Leadership* leadership) {
  server::ServerOptions so;
  so.listen = o.listen;
  so.max_wait = std::chrono::seconds(o.max_wait_seconds);
  so.staleness = std::chrono::seconds(o.staleness_seconds);
  so.threads = o.http_threads;
  so.tls_cert_file = o.tls_cert;
  so.tls_key_file = o.tls_key;
  so.tls_client_ca_file = o.tls_client_ca;
  so.failures = &failures;
  so.access = std::move(access);
  if (leadership != nullptr) so.extra_metrics = [leadership] { return leadership->metrics(); };
  auto service = std::make_unique<server::Server>(std::move(so), publisher);  // before start()
  auto started = service->start();
  if (!started.ok()) {
    std::cerr << "tollgate: " << started.error().message << "\n";
    return nullptr;
  }
  write_port_file(o.port_file, service->port());
  return service;
}

// --once: every table once synced, as JSON lines on stdout.
int print_once(publish::Publisher& publisher, bool cluster, ClusterSource* watch,
               const util::ThreadFailures& failures) {
  auto s = publisher.wait_for(
      [&failures](const publish::Snapshot& x) { return x.synced || failures.failed(); },
      cluster ? std::chrono::seconds(120) : std::chrono::seconds(30));
  if (watch != nullptr) watch->stop();
  if (failures.failed()) {
    std::cerr << "tollgate: a controller thread stopped: " << failures.cause() << "\n";
    return 1;
  }
  if (!s) {
    std::cerr << "tollgate: " << (cluster ? "the cluster" : "the manifests") << " did not sync\n";
    return 1;
  }
  for (const auto& [ns, view] : s->namespaces) {
    for (const auto& e : view->pods) print_pod(std::cout, *s, ns, e);
  }
  std::cout.flush();
  publisher.stop();
  return 0;
}

// The cluster or the manifests, feeding the publisher.
struct Sources {
  std::unique_ptr<source::DirectorySource> dir;
  std::unique_ptr<ClusterSource> watch;
};

util::Status start_sources(const RunOptions& o, const std::optional<k8s::ClusterConfig>& cluster,
                           publish::Publisher& publisher, server::Server* service,
                           Leadership* leadership, util::ThreadFailures& failures, Sources& out) {
  auto sink = [&publisher, leadership](index::Event e) {
    if (leadership != nullptr) leadership->submit(e);
    return publisher.submit(std::move(e));
  };
  if (cluster) {
    ClusterSourceOptions copts;
    copts.failures = &failures;
    out.watch = std::make_unique<ClusterSource>(*cluster, sink, copts);
    TOLLGATE_TRY_STATUS(out.watch->start());
    if (service != nullptr) {
      service->set_source_stats([w = out.watch.get()] {
        std::vector<server::SourceStats> stats;
        for (const auto& k : w->stats()) {
          stats.push_back(server::SourceStats{k.kind, k.events, k.errors, k.relists});
        }
        return stats;
      });
    }
    return util::ok();
  }
  source::DirectoryOptions dopts;
  dopts.read.max_file_bytes = o.max_manifest_bytes;
  dopts.failures = &failures;
  out.dir = std::make_unique<source::DirectorySource>(o.manifests, sink, dopts);
  if (!o.once) {
    out.dir->start();
    return util::ok();
  }
  // --once: every manifest must read, or there is nothing to print.
  const auto problems = out.dir->load();
  if (!out.dir->listed()) {
    for (const auto& p : problems) std::cerr << "tollgate: " << p << "\n";
    return util::make_error("the manifests cannot all be read");
  }
  return util::ok();
}

}  // namespace

int run_controller(const RunOptions& o) {
  auto mesh = mesh_from(o);
  if (!mesh.ok()) {
    std::cerr << "tollgate: " << mesh.error().message << "\n";
    return 2;
  }
  if (!o.manifests.empty() && !o.kubeconfig.empty()) {
    std::cerr << "tollgate: --manifests and --kubeconfig are alternatives; give one\n";
    return 2;
  }
  std::optional<k8s::ClusterConfig> cluster;
  if (o.manifests.empty()) {
    auto c = k8s::resolve_config(o.kubeconfig);
    if (!c.ok()) {
      std::cerr << "tollgate: no cluster to watch: " << c.error().message
                << "\n(give --kubeconfig FILE, run in a pod, or --manifests DIR)\n";
      return 2;
    }
    cluster = std::move(*c);
  }
  auto access = access_control(o, cluster);
  if (!access.ok()) {
    std::cerr << "tollgate: " << access.error().message << "\n";
    return 2;
  }
  // Before any thread starts; a controller thread that dies wakes signals.wait() below (and
  // a --once wait).
  ShutdownSignals signals;
  util::ThreadFailures failures;
  publish::PublisherOptions popts;
  popts.failures = &failures;
  publish::Publisher publisher(*mesh, popts);
  signals.wake_on_failure(failures, [&publisher] { publisher.wake_waiters(); });
  std::unique_ptr<Leadership> leadership;
  if (cluster && !o.once && o.write_status) {
    auto lo = leadership_options(o, *mesh, failures);
    if (!lo.ok()) {
      std::cerr << "tollgate: " << lo.error().message << "\n";
      return 2;
    }
    leadership = std::make_unique<Leadership>(*cluster, std::move(*lo));
    if (auto s = leadership->start(); !s.ok()) {
      std::cerr << "tollgate: " << s.error().message << "\n";
      return 2;
    }
  }
  std::unique_ptr<server::Server> service;
  if (!o.once) {
    service = start_service(o, publisher, failures, std::move(*access), leadership.get());
    if (!service) return 2;
  }
  publisher.start();
  Sources sources;
  auto started =
      start_sources(o, cluster, publisher, service.get(), leadership.get(), failures, sources);
  if (!started.ok()) {
    std::cerr << "tollgate: " << started.error().message << "\n";
    return o.once && !cluster ? 1 : 2;
  }
  if (o.once) return print_once(publisher, cluster.has_value(), sources.watch.get(), failures);
  signals.wait(failures);
  if (leadership) leadership->stop();  // demote, release the Lease: another replica takes over
  if (service) service->shutdown();    // parked long-polls get 304
  if (sources.dir) sources.dir->stop();
  if (sources.watch) sources.watch->stop();
  publisher.stop();
  return failures.failed() || publisher.failed() ? 1 : 0;
}

}  // namespace tollgate::app
