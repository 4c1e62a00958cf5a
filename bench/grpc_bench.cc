// bench/grpc: the agent's gRPC ext_authz Check against a trivial gRPC server that parses the
// same CheckRequest and answers OK without deciding, in the same run, alternating rounds:
//   - calls/s with 4 concurrent calls on one HTTP/2 connection (as Envoy multiplexes), and
//   - round-trip latency percentiles at a fixed 10,000 calls/s (open loop),
// with each server pinned to CPU 0 (taskset) and the client to CPU 1 when both exist. The
// tollgate server also reports the time its handler spends (mapping, decision, response).
// Usage: bench/grpc [--rounds N] [--seconds S]. Prints figures, medians, ranges and ratios.
#include <grpcpp/grpcpp.h>
#include <sched.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "envoy/service/auth/v3/external_auth.grpc.pb.h"
#include "tollgate/agent/grpc_response.h"
#include "tollgate/agent/grpc_server.h"
#include "tollgate/compile/compile.h"
#include "tollgate/policy/parse.h"

extern char** environ;

namespace {

using namespace tollgate;
namespace auth = envoy::service::auth::v3;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Ten rules over the attributes Envoy sends.
constexpr const char* kPolicies = R"(
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
  - from: [{source: {ipBlocks: ["192.168.0.0/16"]}}]
    to: [{operation: {methods: ["DELETE"]}}]
---
kind: AuthorizationPolicy
metadata: {name: deny-remote, namespace: default}
spec:
  action: DENY
  rules:
  - from: [{source: {remoteIpBlocks: ["203.0.113.0/24"]}}]
  - when: [{key: "request.headers[x-token]", values: ["bad"]}]
---
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: default}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/frontend"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]
  - from: [{source: {namespaces: ["prod"]}}]
    to: [{operation: {ports: ["8080"]}}]
---
kind: AuthorizationPolicy
metadata: {name: allow-jwt, namespace: default}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]
    when: [{key: "request.auth.claims[groups]", values: ["admin"]}]
  - from: [{source: {requestPrincipals: ["*"]}}]
    to: [{operation: {hosts: ["backend.default.svc.cluster.local"], methods: ["GET"]}}]
---
kind: AuthorizationPolicy
metadata: {name: allow-misc, namespace: default}
spec:
  rules:
  - when: [{key: destination.ip, values: ["10.0.0.9"]}, {key: connection.sni, values: ["outbound_.9090_*"]}]
  - from: [{source: {notPrincipals: ["*"]}}]
    to: [{operation: {paths: ["/public/*"]}}]
)";

std::shared_ptr<agent::ActiveTable> mk_table() {
  auto docs = policy::parse_documents(kPolicies, "bench");
  if (!docs.ok()) std::abort();
  std::vector<policy::Policy> ps;
  for (const auto& d : *docs) ps.push_back(policy::parse_policy(d.object));
  policy::Workload w;
  w.namespace_ = "default";
  auto t = std::make_shared<agent::ActiveTable>();
  t->table = compile::compile_table(ps, w, {});
  return t;
}

tollgate::wire::Value str(const std::string& s) {
  tollgate::wire::Value v;
  v.set_string_value(s);
  return v;
}

// Requests shaped like Envoy's: peers, a dozen headers, sometimes a JWT payload.
std::vector<auth::CheckRequest> mk_requests() {
  struct Shape {
    const char* principal;
    const char* method;
    const char* path;
    bool jwt;
  };
  const std::array<Shape, 8> shapes = {{
      {"spiffe://cluster.local/ns/default/sa/frontend", "GET", "/api/v1/data", false},
      {"spiffe://cluster.local/ns/default/sa/frontend", "POST", "/api/v1/data", false},
      {"spiffe://cluster.local/ns/prod/sa/api", "GET", "/admin/users", false},
      {"spiffe://cluster.local/ns/prod/sa/api", "PUT", "/items/7", false},
      {"", "GET", "/public/index.html", false},
      {"", "GET", "/api/v1/data", true},
      {"spiffe://cluster.local/ns/other/sa/x", "DELETE", "/items/7", true},
      {"spiffe://cluster.local/ns/default/sa/frontend", "GET", "/api/v1/data?x=1", true},
  }};
  std::vector<auth::CheckRequest> out;
  for (const Shape& s : shapes) {
    auth::CheckRequest c;
    auto* a = c.mutable_attributes();
    if (*s.principal != '\0') a->mutable_source()->set_principal(s.principal);
    a->mutable_source()->mutable_address()->mutable_socket_address()->set_address("10.0.0.7");
    a->mutable_source()->mutable_address()->mutable_socket_address()->set_port_value(51234);
    a->mutable_destination()->mutable_address()->mutable_socket_address()->set_address("10.0.0.9");
    a->mutable_destination()->mutable_address()->mutable_socket_address()->set_port_value(8080);
    auto* http = a->mutable_request()->mutable_http();
    http->set_method(s.method);
    http->set_path(s.path);
    http->set_host("backend.default.svc.cluster.local");
    const std::vector<std::pair<std::string, std::string>> headers = {
        {":authority", "backend.default.svc.cluster.local"},
        {":method", s.method},
        {":path", s.path},
        {":scheme", "http"},
        {"accept", "application/json"},
        {"user-agent", "curl/7.88.1"},
        {"x-request-id", "4b1c7c0e-6a0e-4c2b-9a55-5f1f0d6c1e2a"},
        {"x-forwarded-proto", "http"},
        {"x-envoy-attempt-count", "1"},
        {"x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"},
        {"x-b3-spanid", "e457b5a2e4d86bd1"},
        {"x-b3-sampled", "1"},
    };
    for (const auto& [n, v] : headers) {
      auto* h = http->add_headers();
      h->set_key(n);
      h->set_value(v);
    }
    if (s.jwt) {
      auto& md = (*a->mutable_metadata_context()
                       ->mutable_filter_metadata())[std::string(agent::kJwtAuthnNamespace)];
      auto* f = md.add_fields();
      f->set_key("payload");
      auto* p = f->mutable_value()->mutable_struct_value();
      for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
               {"iss", "https://issuer.example"}, {"sub", "alice"}, {"aud", "backend"}}) {
        auto* e = p->add_fields();
        e->set_key(k);
        *e->mutable_value() = str(v);
      }
      auto* g = p->add_fields();
      g->set_key("groups");
      *g->mutable_value()->mutable_list_value()->add_values() = str("admin");
    }
    out.push_back(std::move(c));
  }
  return out;
}

// The reference: parses the request (grpc++'s own way) and answers OK, deciding nothing.
class TrivialService final : public auth::Authorization::CallbackService {
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context, const auth::CheckRequest*,
                                  auth::CheckResponse* response) override {
    response->mutable_status()->set_code(0);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

// The agent's handler on grpc++'s callback API instead of the async one the server uses
// (which measured more calls per CPU second), to keep the comparison at hand.
class CallbackTollgate final : public auth::Authorization::CallbackService {
 public:
  explicit CallbackTollgate(const agent::Authorizer& a) : authorizer_(a) {}
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const auth::CheckRequest* request,
                                  auth::CheckResponse* response) override {
    auto mapped = agent::map_check_request(*request, options_);
    agent::fill_check_response(
        mapped.ok() ? authorizer_.decide(*mapped) : agent::Authorizer::refuse("x"), *response);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const agent::Authorizer& authorizer_;
  const agent::CheckMappingOptions options_;
};

// The reference on grpc++'s async API: one thread polls the completion queue and answers.
class AsyncTrivial {
 public:
  int start() {
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(&service_);
    cq_ = b.AddCompletionQueue();
    server_ = b.BuildAndStart();
    for (int i = 0; i < 64; ++i) new Call(this);
    thread_ = std::thread([this] {
      void* tag = nullptr;
      bool ok = false;
      while (cq_->Next(&tag, &ok)) static_cast<Call*>(tag)->proceed(ok);
    });
    return port;
  }

 private:
  struct Call {
    explicit Call(AsyncTrivial* s) : server(s), writer(&ctx) {
      s->service_.RequestCheck(&ctx, &request, &writer, s->cq_.get(), s->cq_.get(), this);
    }
    void proceed(bool ok) {
      if (!ok || finished) {
        delete this;
        return;
      }
      new Call(server);
      response.mutable_status()->set_code(0);
      finished = true;
      writer.Finish(response, grpc::Status::OK, this);
    }
    AsyncTrivial* server;
    grpc::ServerContext ctx;
    auth::CheckRequest request;
    auth::CheckResponse response;
    grpc::ServerAsyncResponseWriter<auth::CheckResponse> writer;
    bool finished = false;
  };
  auth::Authorization::AsyncService service_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::unique_ptr<grpc::Server> server_;
  std::thread thread_;
};

// Handler times in 100 ns buckets up to 1 ms; lock-free.
struct Histogram {
  static constexpr std::size_t kBuckets = 10000;
  std::array<std::atomic<std::uint64_t>, kBuckets + 1> counts{};

  void add(std::chrono::nanoseconds d) {
    const auto b = std::min<std::size_t>(static_cast<std::size_t>(d.count() / 100), kBuckets);
    counts[b].fetch_add(1, std::memory_order_relaxed);
  }
  // The q-quantile in ns (bucket upper bound).
  double quantile(double q) const {
    std::uint64_t total = 0;
    for (const auto& c : counts) total += c.load();
    if (total == 0) return 0;
    const auto target = static_cast<std::uint64_t>(q * static_cast<double>(total));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i <= kBuckets; ++i) {
      seen += counts[i].load();
      if (seen > target) return static_cast<double>((i + 1) * 100);
    }
    return static_cast<double>((kBuckets + 1) * 100);
  }
};

// Child mode: serve until standard input closes; then print the handler times (tollgate).
int serve(const std::string& kind) {
  agent::Authorizer authorizer;
  authorizer.activate(mk_table());
  Histogram handler;
  std::unique_ptr<agent::GrpcServer> tollgate_server;
  std::unique_ptr<grpc::Server> trivial_server;
  TrivialService trivial;
  int port = 0;
  if (kind == "tollgate") {
    agent::GrpcServerOptions o;
    o.on_decision = [&](const eval::Request*, const agent::Answer&, std::chrono::nanoseconds d) {
      handler.add(d);
    };
    tollgate_server = std::make_unique<agent::GrpcServer>();
    auto p = tollgate_server->start("127.0.0.1:0", authorizer, o);
    if (!p.ok()) {
      std::fprintf(stderr, "%s\n", p.error().message.c_str());
      return 1;
    }
    port = *p;
  } else if (kind == "tollgate-callback") {
    auto* service = new CallbackTollgate(authorizer);  // lives until _Exit
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(service);
    trivial_server = b.BuildAndStart();
    if (!trivial_server) return 1;
  } else if (kind == "trivial-async") {
    auto* async = new AsyncTrivial();  // lives until _Exit
    port = async->start();
  } else {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(&trivial);
    trivial_server = b.BuildAndStart();
    if (!trivial_server) return 1;
  }
  std::printf("port %d\n", port);
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  if (tollgate_server) {
    tollgate_server->stop();
    std::printf("handler_ns p50 %.0f p99 %.0f p999 %.0f\n", handler.quantile(0.5),
                handler.quantile(0.99), handler.quantile(0.999));
  }
  std::fflush(stdout);
  std::_Exit(0);  // the references need no orderly shutdown
}

struct Child {
  pid_t pid = -1;
  FILE* in = nullptr;   // the child's stdin
  FILE* out = nullptr;  // the child's stdout
  int port = 0;
};

Child spawn_server(const std::string& self, const std::string& kind, bool pin) {
  int to[2], from[2];
  if (pipe(to) != 0 || pipe(from) != 0) std::abort();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, to[0], 0);
  posix_spawn_file_actions_adddup2(&fa, from[1], 1);
  posix_spawn_file_actions_addclose(&fa, to[1]);
  posix_spawn_file_actions_addclose(&fa, from[0]);
  std::vector<std::string> args;
  if (pin) args = {"taskset", "-c", "0"};
  args.insert(args.end(), {self, "--serve", kind});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  Child c;
  if (posix_spawnp(&c.pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) std::abort();
  posix_spawn_file_actions_destroy(&fa);
  close(to[0]);
  close(from[1]);
  c.in = fdopen(to[1], "w");
  c.out = fdopen(from[0], "r");
  char line[256];
  if (std::fgets(line, sizeof line, c.out) == nullptr ||
      std::sscanf(line, "port %d", &c.port) != 1) {
    std::fprintf(stderr, "grpc bench: the %s server did not start\n", kind.c_str());
    std::exit(1);
  }
  return c;
}

// Closes the child's stdin, returns what it printed after, and reaps it.
std::string stop_server(Child& c) {
  std::fclose(c.in);
  std::string rest;
  char line[256];
  while (std::fgets(line, sizeof line, c.out) != nullptr) rest += line;
  std::fclose(c.out);
  int status = 0;
  waitpid(c.pid, &status, 0);
  return rest;
}

struct Client {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<auth::Authorization::Stub> stub;
  std::vector<auth::CheckRequest> requests = mk_requests();

  explicit Client(int port) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own per run
    channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                        grpc::InsecureChannelCredentials(), args);
    stub = auth::Authorization::NewStub(channel);
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + 30s)) {
      std::fprintf(stderr, "grpc bench: cannot connect\n");
      std::exit(1);
    }
  }
};

// CPU seconds (user + system) process `pid` has used.
double cpu_seconds(pid_t pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return 0;
  char buf[1024];
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // Fields after the command name (which ends with the last ')'): 14 utime, 15 stime.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return 0;
  unsigned long utime = 0, stime = 0;
  if (std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) !=
      2) {
    return 0;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double self_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct Throughput {
  double calls_per_s = 0;
  double server_cpu = 0;  // the server's CPU seconds per second of the measure
  double client_cpu = 0;
};

// `loops` loops of one call in flight each; completions counted over `how_long`.
Throughput throughput(Client& client, pid_t server, int loops,
                      std::chrono::duration<double> how_long) {
  struct Loop {
    std::unique_ptr<grpc::ClientContext> ctx;
    auth::CheckResponse response;
    std::size_t next = 0;
  };
  std::atomic<std::uint64_t> done{0};
  std::atomic<bool> stop{false};
  std::atomic<int> running{loops};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Loop> state(static_cast<std::size_t>(loops));
  std::function<void(std::size_t)> issue = [&](std::size_t i) {
    Loop& l = state[i];
    l.ctx = std::make_unique<grpc::ClientContext>();
    const auth::CheckRequest& req = client.requests[l.next++ % client.requests.size()];
    client.stub->async()->Check(l.ctx.get(), &req, &l.response, [&, i](grpc::Status s) {
      if (!s.ok()) {
        std::fprintf(stderr, "grpc bench: call failed: %s\n", s.error_message().c_str());
        std::exit(1);
      }
      done.fetch_add(1, std::memory_order_relaxed);
      if (!stop.load(std::memory_order_relaxed)) {
        issue(i);
      } else if (running.fetch_sub(1) == 1) {
        std::lock_guard lock(mu);
        cv.notify_all();
      }
    });
  };
  for (std::size_t i = 0; i < state.size(); ++i) issue(i);
  std::this_thread::sleep_for(300ms);  // warm-up
  const std::uint64_t start_count = done.load();
  const double server_start = cpu_seconds(server), client_start = self_cpu_seconds();
  const auto start = Clock::now();
  std::this_thread::sleep_for(how_long);
  const std::uint64_t end_count = done.load();
  const auto end = Clock::now();
  const double server_end = cpu_seconds(server), client_end = self_cpu_seconds();
  stop = true;
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return running.load() == 0; });
  const double wall = std::chrono::duration<double>(end - start).count();
  return {static_cast<double>(end_count - start_count) / wall, (server_end - server_start) / wall,
          (client_end - client_start) / wall};
}

struct Latency {
  double p50_us = 0, p99_us = 0, p999_us = 0;
};

// Open loop: a call every 1/rate s for `how_long`, each timed from its send to its answer.
Latency latency(Client& client, double rate, std::chrono::duration<double> how_long) {
  const auto interval =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / rate));
  const auto n = static_cast<std::size_t>(how_long.count() * rate);
  struct Call {
    grpc::ClientContext ctx;
    auth::CheckResponse response;
    Clock::time_point sent;
    double micros = 0;
  };
  std::vector<std::unique_ptr<Call>> calls(n);
  std::atomic<std::size_t> completed{0};
  std::mutex mu;
  std::condition_variable cv;
  auto next = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    std::this_thread::sleep_until(next);
    next += interval;
    calls[i] = std::make_unique<Call>();
    Call* c = calls[i].get();
    c->sent = Clock::now();
    client.stub->async()->Check(
        &c->ctx, &client.requests[i % client.requests.size()], &c->response,
        [&, c](grpc::Status s) {
          if (!s.ok()) std::exit(1);
          c->micros = std::chrono::duration<double, std::micro>(Clock::now() - c->sent).count();
          if (completed.fetch_add(1) + 1 == n) {
            std::lock_guard lock(mu);
            cv.notify_all();
          }
        });
  }
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return completed.load() == n; });
  }
  std::vector<double> us;
  // The first tenth warms up.
  for (std::size_t i = n / 10; i < n; ++i) us.push_back(calls[i]->micros);
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    return us[static_cast<std::size_t>(q * static_cast<double>(us.size() - 1))];
  };
  return {at(0.5), at(0.99), at(0.999)};
}

// The handler's work without gRPC, on this thread, up to `stage`: 1 parse the CheckRequest
// bytes, 2 and map them, 3 and decide, 4 and build and serialize the CheckResponse. ns per call.
double handler_ns(int stage, std::chrono::duration<double> how_long) {
  agent::Authorizer authorizer;
  authorizer.activate(mk_table());
  std::vector<std::string> bytes;
  for (const auto& r : mk_requests()) bytes.push_back(r.SerializeAsString());
  const agent::CheckMappingOptions options;
  std::uint64_t calls = 0, allowed = 0;
  const auto start = Clock::now();
  const auto end = start + how_long;
  auto now = start;
  std::string out;
  alignas(std::max_align_t) static char initial[8192];
  while (now < end) {
    for (int i = 0; i < 1000; ++i) {
      google::protobuf::ArenaOptions arena_options;
      arena_options.initial_block = initial;
      arena_options.initial_block_size = sizeof initial;
      google::protobuf::Arena arena(arena_options);
      auto* check = google::protobuf::Arena::CreateMessage<auth::CheckRequest>(&arena);
      if (!check->ParseFromString(bytes[calls++ % bytes.size()])) std::abort();
      if (stage < 2) continue;
      auto mapped = agent::map_check_request(*check, options);
      if (stage < 3) continue;
      const agent::Answer a =
          mapped.ok() ? authorizer.decide(*mapped) : agent::Authorizer::refuse("x");
      allowed += a.allowed ? 1 : 0;
      if (stage < 4) continue;
      auto* response = google::protobuf::Arena::CreateMessage<auth::CheckResponse>(&arena);
      agent::fill_check_response(a, *response);
      out.clear();
      response->SerializeToString(&out);
    }
    now = Clock::now();
  }
  if (stage >= 3 && (allowed == 0 || allowed == calls)) std::abort();  // both outcomes measured
  return std::chrono::duration<double, std::nano>(now - start).count() / static_cast<double>(calls);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string range(const std::vector<double>& v, const char* fmt) {
  char buf[128];
  std::snprintf(buf, sizeof buf, fmt, *std::min_element(v.begin(), v.end()),
                *std::max_element(v.begin(), v.end()));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--serve") return serve(argv[2]);
  int rounds = 5;
  double seconds = 3;
  std::vector<std::string> extra_kinds;  // --also trivial-async: another reference
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--rounds") rounds = std::max(0, std::atoi(argv[i + 1]));
    if (a == "--seconds") seconds = std::max(0.5, std::atof(argv[i + 1]));
    if (a == "--also") extra_kinds.emplace_back(argv[i + 1]);
  }
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return 1;
  self[len] = '\0';

  const bool pin = std::thread::hardware_concurrency() >= 2 &&
                   std::system("taskset -c 0 true >/dev/null 2>&1") == 0;
  if (pin) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(1, &set);
    sched_setaffinity(0, sizeof set, &set);  // the client, and its grpc threads, on CPU 1
  }
  std::printf(
      "bench/grpc: %s; %d rounds of %.1f s per measure; 10-rule table; %zu request "
      "shapes\n",
      pin ? "server pinned to CPU 0 (taskset), client to CPU 1"
          : "no pinning (taskset or a second CPU missing)",
      rounds, seconds, mk_requests().size());

  {
    const auto d = std::chrono::duration<double>(seconds / 4);
    const double parse = handler_ns(1, d), map = handler_ns(2, d), decide = handler_ns(3, d),
                 all = handler_ns(4, d);
    std::printf(
        "handler work in-process: %.0f ns per call = parse %.0f + map %.0f + decide %.0f "
        "+ respond %.0f\n",
        all, parse, map - parse, decide - map, all - decide);
  }
  if (rounds == 0) return 0;  // --rounds 0: the in-process figure only
  std::vector<std::string> kinds = {"trivial", "tollgate"};
  kinds.insert(kinds.end(), extra_kinds.begin(), extra_kinds.end());
  const std::size_t n = kinds.size();
  std::vector<std::vector<double>> qps(n), p99(n), p50(n), p999(n), per_cpu(n);
  for (int round = 1; round <= rounds; ++round) {
    for (std::size_t k = 0; k < n; ++k) {
      Child c = spawn_server(self, kinds[k], pin);
      Throughput t;
      Latency l;
      {
        Client client(c.port);
        t = throughput(client, c.pid, 4, std::chrono::duration<double>(seconds));
        l = latency(client, 10000, std::chrono::duration<double>(seconds));
      }
      const double q = t.calls_per_s;
      per_cpu[k].push_back(t.server_cpu > 0 ? q / t.server_cpu : 0);
      const std::string tail = stop_server(c);
      qps[k].push_back(q);
      p50[k].push_back(l.p50_us);
      p99[k].push_back(l.p99_us);
      p999[k].push_back(l.p999_us);
      std::printf(
          "round %d %-13s %6.0f calls/s (4 concurrent; server CPU %3.0f%%, client %3.0f%%: %6.0f "
          "per server CPU s)   at 10,000/s: p50 %6.1f us  p99 %7.1f us  p99.9 %7.1f us\n",
          round, kinds[k].c_str(), q, 100 * t.server_cpu, 100 * t.client_cpu, per_cpu[k].back(),
          l.p50_us, l.p99_us, l.p999_us);
      if (!tail.empty())
        std::printf("    tollgate handler (map + decide + respond): %s", tail.c_str());
      std::fflush(stdout);
    }
  }
  std::printf("\n");
  for (std::size_t k = 2; k < n; ++k) {
    std::printf("%s: %.0f calls/s (%s), %.0f per server CPU s, p99 %.1f us (%s)\n",
                kinds[k].c_str(), median(qps[k]), range(qps[k], "%.0f-%.0f").c_str(),
                median(per_cpu[k]), median(p99[k]), range(p99[k], "%.1f-%.1f").c_str());
  }
  const double q_t = median(qps[1]), q_r = median(qps[0]);
  const double l_t = median(p99[1]), l_r = median(p99[0]);
  std::printf(
      "calls/s, 4 concurrent, server on one core: tollgate %.0f (%s), trivial %.0f (%s); "
      "ratio %.2f\n",
      q_t, range(qps[1], "%.0f-%.0f").c_str(), q_r, range(qps[0], "%.0f-%.0f").c_str(), q_t / q_r);
  std::printf(
      "p99 round trip at 10,000 calls/s: tollgate %.1f us (%s), trivial %.1f us (%s); "
      "added by deciding %.1f us\n",
      l_t, range(p99[1], "%.1f-%.1f").c_str(), l_r, range(p99[0], "%.1f-%.1f").c_str(), l_t - l_r);
  std::printf("calls per second of server CPU: tollgate %.0f (%s), trivial %.0f (%s); ratio %.2f\n",
              median(per_cpu[1]), range(per_cpu[1], "%.0f-%.0f").c_str(), median(per_cpu[0]),
              range(per_cpu[0], "%.0f-%.0f").c_str(), median(per_cpu[1]) / median(per_cpu[0]));
  std::printf("p50 round trip at 10,000 calls/s: tollgate %.1f us, trivial %.1f us\n",
              median(p50[1]), median(p50[0]));
  std::printf("targets: >= 50,000 calls/s: %s; p99 <= 200 us: %s\n",
              q_t >= 50000 ? "met" : "NOT met", l_t <= 200 ? "met" : "NOT met");
  return 0;
}
