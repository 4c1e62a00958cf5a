// bench/agent: the agent as the pod's enforcement point, measured in one run:
//   (a) req/s through nginx -> auth_request -> agent -> app, against the same nginx config
//       asking an nginx location that answers 204 instead (the agent against a static answer),
//       alternating rounds with wrk, pinned (servers on CPU 0, wrk on CPU 1) and shared;
//   (b) the decision inside the agent (read the proxy's headers, decide, answer) for a 10-rule
//       table, timed call by call in this process, and the agent's own histogram under (a);
//   (c) the agent's RSS with the seed table and with a 1,000-rule table;
//   (d) controller publish -> agent deciding with the new table, with N real agents and
//       simulated long-pollers (raw sockets) making 1,000 parked long-polls on one controller.
// Needs nginx, wrk and openssl (scripts/install-deps.sh).
// Usage: bench/agent [--only a|b|c|d] [--agents N (real agents in d, default 100)]
//        TOLLGATE_BENCH_ROUNDS=N (default 5). Prints figures, medians, ranges and ratios.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support.h"
#include "tollgate/agent/authorizer.h"
#include "tollgate/agent/authz_request.h"
#include "tollgate/agent/http_service.h"
#include "tollgate/compile/compile.h"
#include "tollgate/util/log.h"
#include "tollgate/util/time.h"

extern char** environ;

namespace {

using namespace tollgate;
using namespace tollgate::bench;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// --- processes, sockets, HTTP ---

pid_t spawn(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  if (posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

void stop(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
}

// One answer from `fd`: the head, then Content-Length bytes of body. Empty on EOF or error.
std::string read_answer(int fd) {
  std::string got;
  char buf[65536];
  for (;;) {
    const auto end = got.find("\r\n\r\n");
    if (end != std::string::npos) {
      const Reply head = parse_reply(got.substr(0, end + 4));
      const auto it = head.headers.find("content-length");
      const std::size_t length = it == head.headers.end() ? 0 : std::stoul(it->second);
      if (got.size() >= end + 4 + length) return got;
    }
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return got;
    got.append(buf, static_cast<std::size_t>(n));
  }
}

// Polls `ok` every 20 ms for up to `limit`.
template <typename F>
bool wait_until(F ok, std::chrono::seconds limit = 60s) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (ok()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return ok();
}

int read_port(const fs::path& file) {
  int port = 0;
  wait_until([&] {
    std::ifstream in(file);
    in >> port;
    return port > 0;
  });
  return port;
}

// What VmRSS is made of: /proc/<pid>/smaps, by mapping, in KiB.
struct Memory {
  std::size_t rss = 0, anonymous = 0, shared_clean = 0;
  std::vector<std::pair<std::size_t, std::string>> largest;  // (Rss, file) of mapped files
};

Memory memory_of(pid_t pid) {
  Memory m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
  std::map<std::string, std::size_t> by_file;
  std::string name;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string first;
    fields >> first;
    if (first.find('-') != std::string::npos && first.back() != ':') {
      std::string skip;
      fields >> skip >> skip >> skip >> skip;
      name.clear();
      fields >> name;
      continue;
    }
    std::size_t kib = 0;
    fields >> kib;
    if (first == "Rss:") {
      m.rss += kib;
      if (!name.empty() && name.front() == '/') by_file[fs::path(name).filename()] += kib;
    } else if (first == "Anonymous:") {
      m.anonymous += kib;
    } else if (first == "Shared_Clean:") {
      m.shared_clean += kib;
    }
  }
  for (const auto& [file, kib] : by_file) m.largest.emplace_back(kib, file);
  std::sort(m.largest.rbegin(), m.largest.rend());
  if (m.largest.size() > 6) m.largest.resize(6);
  return m;
}

// CPU seconds used so far by the process `pid` (all its threads).
double process_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  const auto close_paren = stat.rfind(')');
  if (close_paren == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close_paren + 2));
  std::string f[13];
  for (auto& x : f) fields >> x;
  return (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(std::lround(p * static_cast<double>(v.size() - 1)));
  return v[std::min(i, v.size() - 1)];
}

std::string range(const std::vector<double>& v, const char* fmt) {
  if (v.empty()) return "-";
  char buf[128];
  std::snprintf(buf, sizeof buf, fmt, *std::min_element(v.begin(), v.end()));
  std::string out = buf;
  std::snprintf(buf, sizeof buf, fmt, *std::max_element(v.begin(), v.end()));
  return out + ".." + buf;
}

// --- the scenario: manifests, controller, agents ---

// Ten rules over what a forward-auth proxy sends; GET /bench/... is allowed by the last one,
// after every other rule has been tried.
std::string ten_rules(const std::string& suffix, bool with_bench_rule) {
  std::string s = R"(kind: AuthorizationPolicy
metadata: {name: deny-admin@, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin@*"]}}]
  - from: [{source: {ipBlocks: ["192.168.0.0/16"]}}]
    to: [{operation: {methods: ["DELETE"], paths: ["/data@/*"]}}]
  - when: [{key: "request.headers[x-token@]", values: ["stolen"]}]
---
kind: AuthorizationPolicy
metadata: {name: allow-backend@, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/frontend@"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/api@/*"]}}]
  - from: [{source: {namespaces: ["prod@"]}}]
    to: [{operation: {ports: ["9443"]}}]
  - from: [{source: {principals: ["cluster.local/ns/ops@/sa/*"]}}]
    to: [{operation: {paths: ["/metrics@", "/debug@/*"]}}]
  - to: [{operation: {hosts: ["status@.example"], paths: ["/status"]}}]
  - when: [{key: "request.headers[x-api-key@]", values: ["k-*"]}]
    to: [{operation: {methods: ["POST"]}}]
  - from: [{source: {remoteIpBlocks: ["10.0.0.0/8"]}}]
    to: [{operation: {methods: ["PUT"], paths: ["/items@/*"]}}]
)";
  s += with_bench_rule
           ? "  - to: [{operation: {methods: [\"GET\", \"HEAD\"], paths: [\"/bench/*\"]}}]\n"
           : "  - to: [{operation: {methods: [\"GET\"], paths: [\"/other@/*\"]}}]\n";
  for (std::size_t at; (at = s.find('@')) != std::string::npos;) s.replace(at, 1, suffix);
  return s;
}

std::string pod(const std::string& name) {
  return "apiVersion: v1\nkind: Pod\nmetadata: {name: " + name +
         ", namespace: default, labels: {app: backend}}\nspec: {serviceAccountName: backend, "
         "containers: [{name: app, image: app}]}\n";
}

// A manifest directory with `rules` rules (10 per two policies) and the pods named.
fs::path manifests(const fs::path& dir, int rules, const std::vector<std::string>& pods) {
  fs::create_directories(dir);
  std::ofstream out(dir / "cluster.yaml");
  for (int i = 0; i < rules / 10; ++i) {
    out << ten_rules(i == 0 ? "" : "-" + std::to_string(i), i == 0) << "---\n";
  }
  for (const auto& p : pods) out << pod(p) << "---\n";
  return dir;
}

struct Controller {
  pid_t pid = -1;
  int port = 0;
  fs::path log;
};

Controller start_controller(const fs::path& dir, const fs::path& manifests_dir,
                            const std::string& name) {
  Controller c;
  c.log = dir / (name + ".log");
  const fs::path port_file = dir / (name + ".port");
  fs::remove(port_file);
  c.pid = spawn({TOLLGATE_BINARY, "run", "--manifests", manifests_dir.string(), "--listen",
                 "127.0.0.1:0", "--port-file", port_file.string()},
                c.log);
  c.port = read_port(port_file);
  wait_until([&] { return get(c.port, "/readyz").status == 200; });
  return c;
}

struct Agent {
  pid_t pid = -1;
  int port = 0;
  fs::path log;
};

// Where the agents keep their tables: tmpfs (/dev/shm) when there is one, as pod.yaml's
// emptyDir with medium: Memory; saving a table on this machine's disk (two fsyncs) costs
// ~1.3 ms of CPU per activation, five times the rest of it.
fs::path g_state_root;

// `tollgate agent` for default/<pod_name>; `prefix` runs it (taskset), `extra` are more flags.
Agent start_agent(const fs::path& dir, int controller_port, const std::string& pod_name,
                  const std::string& name, const std::vector<std::string>& prefix = {},
                  const std::vector<std::string>& extra = {}) {
  Agent a;
  a.log = dir / (name + ".log");
  const fs::path port_file = dir / (name + ".port");
  fs::remove(port_file);
  std::vector<std::string> args = prefix;
  for (const std::string& s :
       {std::string(TOLLGATE_BINARY), std::string("agent"), std::string("--controller"),
        "http://127.0.0.1:" + std::to_string(controller_port), std::string("--namespace"),
        std::string("default"), std::string("--pod"), pod_name, std::string("--state-dir"),
        (g_state_root / ("state-" + name)).string(), std::string("--listen"),
        std::string("127.0.0.1:0"), std::string("--port-file"), port_file.string(),
        std::string("--wait"), std::string("300")}) {
    args.push_back(s);
  }
  args.insert(args.end(), extra.begin(), extra.end());
  a.pid = spawn(args, a.log);
  a.port = read_port(port_file);
  return a;
}

bool agent_ready(const Agent& a) { return get(a.port, "/readyz").status == 200; }

// --- (b) the decision inside the agent, timed in this process ---

struct NullExchange final : http::Exchange {
  std::shared_ptr<http::Waker> waker() override { return nullptr; }
};

// The table the controller compiles for default/backend from `dir` (tollgate run --once).
std::optional<compile::DecisionTable> controller_table(const fs::path& dir) {
  const std::string cmd =
      std::string(TOLLGATE_BINARY) + " run --once --manifests " + dir.string() + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::string out;
  char buf[65536];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  pclose(p);
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("pod", "") == "backend") {
      auto t = compile::table_from_json(j["table"]);
      if (t.ok()) return std::move(*t);
    }
  }
  return std::nullopt;
}

std::string url_escape(const std::string& s) {
  std::string out;
  for (const unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char b[4];
      std::snprintf(b, sizeof b, "%%%02X", c);
      out += b;
    }
  }
  return out;
}

// A client certificate with frontend's SPIFFE id, as nginx's $ssl_client_escaped_cert.
// Also server.crt/.key and ca.crt there, which examples/agent/nginx.conf names.
std::string escaped_client_cert(const fs::path& dir) {
  fs::create_directories(dir);
  const std::string d = dir.string();
  const std::string cmd =
      "cd " + d +
      " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
      "-out ca.crt -days 1 -subj /CN=ca 2>/dev/null && openssl req -newkey ec -pkeyopt "
      "ec_paramgen_curve:P-256 -nodes -keyout c.key -out c.csr -subj /CN=frontend 2>/dev/null "
      "&& printf 'subjectAltName=URI:spiffe://cluster.local/ns/default/sa/frontend\\n' > c.ext "
      "&& openssl x509 -req -in c.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 "
      "-extfile c.ext -out c.crt 2>/dev/null && cp c.crt server.crt && cp c.key server.key";
  if (std::system(cmd.c_str()) != 0) return "";
  std::ifstream in(dir / "c.crt");
  std::stringstream pem;
  pem << in.rdbuf();
  return url_escape(pem.str());
}

struct Timing {
  double p50 = 0, p99 = 0, p999 = 0;
};

// Times `f` call by call: `rounds` of `n` calls, after a warm-up; percentiles in µs.
template <typename F>
Timing time_calls(F f, int n = 20000, int rounds = 10) {
  for (int i = 0; i < n; ++i) f();
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(n) * static_cast<std::size_t>(rounds));
  for (int r = 0; r < rounds; ++r) {
    for (int i = 0; i < n; ++i) {
      const auto t0 = Clock::now();
      f();
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
  }
  return {percentile(us, 0.5), percentile(us, 0.99), percentile(us, 0.999)};
}

void bench_decision(const fs::path& dir) {
  std::printf(
      "\n(b) the decision inside the agent, this process, one thread, 200,000 calls "
      "each (target p99 <= 20 us for 10 rules)\n");
  const std::string cert = escaped_client_cert(dir / "pki-b");
  for (const int rules : {10, 1000}) {
    const auto table =
        controller_table(manifests(dir / ("b-" + std::to_string(rules)), rules, {"backend"}));
    if (!table) {
      std::printf("  cannot compile the %d-rule table\n", rules);
      return;
    }
    agent::Authorizer authorizer;
    auto active = std::make_shared<agent::ActiveTable>();
    active->table = *table;
    authorizer.activate(active);
    agent::AgentMetrics metrics;
    agent::DecisionObserver observer(metrics, authorizer, nullptr);
    agent::HttpService service(authorizer, metrics, observer, {}, {});
    struct Shape {
      const char* what;
      const char* method;
      const char* uri;
      bool cert;
    };
    const Shape shapes[] = {
        {"plaintext GET /bench/item, allowed by the last rule", "GET", "/bench/item", false},
        {"frontend's certificate (URL-escaped PEM), GET /api/x", "GET", "/api/v1/data", true},
        {"plaintext DELETE /nothing, denied by default", "DELETE", "/nothing?x=1", false},
    };
    std::printf("  %d rules (%zu allow + %zu deny rules compiled):\n", rules, table->allow.size(),
                table->deny.size());
    for (const Shape& s : shapes) {
      // nginx's auth subrequest, header for header (examples/agent/nginx.conf), plus what a
      // client typically sends.
      std::vector<std::pair<std::string, std::string>> h = {
          {"Host", "tollgate_agent"},
          {"X-Original-Method", s.method},
          {"X-Original-URI", s.uri},
          {"X-Forwarded-Host", "backend.default.svc.cluster.local"},
          {"X-Forwarded-Port", "8443"},
          {"X-Real-IP", "10.1.2.3"},
          {"User-Agent", "curl/7.88.1"},
          {"Accept", "*/*"},
          {"X-Request-Id", "4b1c7c0e-6a0e-4c2b-9a55-5f1f0d6c1e2a"}};
      if (s.cert) h.emplace_back("X-Forwarded-Tls-Client-Cert", cert);
      std::vector<http::Header> views;
      views.reserve(h.size());
      for (const auto& [n, v] : h) views.push_back({n, v});
      http::Request req;
      req.method = "GET";
      req.target = "/v1/authz";
      req.headers = views;
      NullExchange x;
      bool allowed = false;
      const Timing mapped = time_calls([&] {
        auto r = agent::map_forward_auth(h, {});
        allowed = r.ok() && authorizer.decide(*r).allowed;
      });
      const Timing handled = time_calls([&] { (void)service.handle(req, x); });
      std::printf(
          "    %-54s %s: read+decide p50 %5.2f p99 %5.2f p99.9 %5.2f us | the "
          "endpoint's handler p50 %5.2f p99 %5.2f p99.9 %5.2f us\n",
          s.what, allowed ? "ALLOW" : "DENY ", mapped.p50, mapped.p99, mapped.p999, handled.p50,
          handled.p99, handled.p999);
    }
    // A certificate the thread has not seen yet: trailing spaces change the memo's key, not
    // the certificate, so every call decodes it (OpenSSL's d2i_X509).
    std::vector<std::pair<std::string, std::string>> h = {{"X-Original-Method", "GET"},
                                                          {"X-Original-URI", "/api/v1/data"},
                                                          {"X-Forwarded-Tls-Client-Cert", ""}};
    int call = 0;
    const Timing cold = time_calls(
        [&] {
          h.back().second = cert + std::string(static_cast<std::size_t>(++call % 1000), ' ');
          auto r = agent::map_forward_auth(h, {});
          (void)(r.ok() && authorizer.decide(*r).allowed);
        },
        2000, 5);
    std::printf(
        "    %-54s        read+decide p50 %5.1f p99 %5.1f us (decoding the "
        "certificate: once per client certificate and HTTP thread)\n",
        "a certificate not seen before", cold.p50, cold.p99);
  }
}

// --- (a) nginx -> auth_request -> agent vs -> a 204 location ---

// The shipped nginx.conf, plain HTTP on `port`, asking `auth_port`, with the app (200) and
// the reference authorizer (204) as extra server blocks of the same nginx.
bool write_nginx_conf(const fs::path& conf, const fs::path& dir, int port, int auth_port,
                      int app_port, int ref_port, int workers) {
  std::ifstream in(fs::path(TOLLGATE_SOURCE_DIR) / "examples/agent/nginx.conf");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  const std::string blocks =
      "http {\n  server { listen 127.0.0.1:" + std::to_string(app_port) +
      "; access_log off; location / { return 200 \"app\\n\"; } }\n  server { listen 127.0.0.1:" +
      std::to_string(ref_port) + "; access_log off; location / { return 204; } }\n";
  const std::pair<std::string, std::string> edits[] = {
      {"worker_processes auto;", "worker_processes " + std::to_string(workers) + ";"},
      {"pid /tmp/nginx.pid;", "pid " + (dir / (std::to_string(port) + ".pid")).string() + ";"},
      {"error_log stderr notice;", "error_log " + (dir / "nginx-error.log").string() + " warn;"},
      {"access_log /dev/stdout;", "access_log off;"},
      {"listen 8443 ssl;", "listen 127.0.0.1:" + std::to_string(port) + ";"},
      {"listen 15021;", "listen 127.0.0.1:" + std::to_string(free_port()) + ";"},
      {"server 127.0.0.1:15010;", "server 127.0.0.1:" + std::to_string(auth_port) + ";"},
      {"server 127.0.0.1:8080;", "server 127.0.0.1:" + std::to_string(app_port) + ";"},
      {"/etc/tollgate/tls/", (dir / "pki-b/").string()},
      {"http {\n", blocks},
  };
  for (const auto& [from, to] : edits) {
    const auto at = text.find(from);
    if (at == std::string::npos) {
      std::fprintf(stderr, "bench/agent: examples/agent/nginx.conf has no \"%s\"\n", from.c_str());
      return false;
    }
    text.replace(at, from.size(), to);
    // The certificate directory appears three times.
    for (std::size_t more; from.front() == '/' && (more = text.find(from)) != std::string::npos;) {
      text.replace(more, from.size(), to);
    }
  }
  std::ofstream(conf) << text;
  return true;
}

struct WrkResult {
  double rps = 0, p99_ms = 0, requests = 0;
  double cpu_us = 0;  // the servers' CPU time (user + system) per request
};

// wrk against `port`; `servers`: the processes whose CPU time the requests cost.
WrkResult wrk(const std::string& prefix, int port, int threads, int seconds,
              const std::vector<pid_t>& servers) {
  const std::string cmd =
      prefix + "wrk -t" + std::to_string(threads) + " -c32 -d" + std::to_string(seconds) +
      "s --latency http://127.0.0.1:" + std::to_string(port) + "/bench/item 2>&1";
  WrkResult r;
  double cpu0 = 0;
  for (const pid_t s : servers) cpu0 += cpu_seconds(s);
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char line[512];
  bool non2xx = false;
  while (std::fgets(line, sizeof line, p) != nullptr) {
    const std::string s(line);
    if (s.find("Requests/sec:") != std::string::npos) r.rps = std::atof(s.c_str() + 13);
    if (s.find(" 99%") != std::string::npos) r.p99_ms = to_ms(s.substr(s.find("99%") + 3));
    if (s.find("Non-2xx") != std::string::npos) non2xx = true;
    if (s.find(" requests in ") != std::string::npos) r.requests = std::atof(s.c_str());
  }
  pclose(p);
  double cpu1 = 0;
  for (const pid_t s : servers) cpu1 += cpu_seconds(s);
  if (r.requests > 0) r.cpu_us = (cpu1 - cpu0) * 1e6 / r.requests;
  if (non2xx) {
    std::fprintf(stderr, "bench/agent: wrk saw non-2xx answers on port %d\n", port);
    r.rps = 0;
  }
  return r;
}

struct Histogram {
  std::vector<std::pair<double, double>> buckets;  // (le, cumulative count)
  double count = 0;
};

Histogram decision_histogram(int agent_port) {
  Histogram h;
  std::istringstream in(get(agent_port, "/metrics").body);
  const std::string bucket = "tollgate_agent_decision_duration_seconds_bucket{le=\"";
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(bucket, 0) == 0) {
      const auto q = line.find('"', bucket.size());
      const std::string le = line.substr(bucket.size(), q - bucket.size());
      const double n = std::atof(line.c_str() + line.rfind(' ') + 1);
      h.buckets.emplace_back(le == "+Inf" ? 1e9 : std::atof(le.c_str()), n);
      h.count = std::max(h.count, n);
    }
  }
  return h;
}

// The smallest bucket bound holding `p` of the decisions made between `before` and `after`.
double histogram_bound(const Histogram& before, const Histogram& after, double p) {
  const double total = after.count - before.count;
  for (std::size_t i = 0; i < after.buckets.size(); ++i) {
    const double below =
        after.buckets[i].second - (i < before.buckets.size() ? before.buckets[i].second : 0.0);
    if (total > 0 && below >= p * total) return after.buckets[i].first;
  }
  return 0;
}

bool bench_throughput(const fs::path& dir, int rounds) {
  std::printf(
      "\n(a) req/s, nginx -> auth_request -> agent -> app against nginx -> auth_request "
      "-> an nginx location answering 204 -> app; wrk -c32 GET /bench/item (allowed); "
      "examples/agent/nginx.conf in plain HTTP (target >= 0.8x)\n");
  if (escaped_client_cert(dir / "pki-b").empty()) {  // nginx.conf names certificate files
    std::fprintf(stderr, "bench/agent: openssl failed\n");
    return false;
  }
  const Controller controller =
      start_controller(dir, manifests(dir / "a-manifests", 10, {"backend"}), "controller-a");
  struct Setup {
    const char* name;
    std::string server_prefix, client_prefix;
    int workers, agent_threads, wrk_threads;
  };
  const Setup setups[] = {
      {"pinned: nginx (1 worker) and the agent (1 thread) on CPU 0, wrk -t1 on CPU 1",
       "taskset -c 0 ", "taskset -c 1 ", 1, 1, 1},
      {"shared: nginx (2 workers), the agent (2 threads) and wrk -t2 on both cores", "", "", 2, 2,
       2}};
  for (const Setup& setup : setups) {
    std::vector<std::string> prefix;
    if (!setup.server_prefix.empty()) prefix = {"taskset", "-c", "0"};
    const Agent agent = start_agent(dir, controller.port, "backend", "agent-a", prefix,
                                    {"--http-threads", std::to_string(setup.agent_threads)});
    if (!wait_until([&] { return agent_ready(agent); })) {
      std::fprintf(stderr, "bench/agent: the agent is not ready (%s)\n", agent.log.c_str());
      return false;
    }
    // Two nginx processes from the same shipped config, each with its own app (200) and 204
    // server blocks: one asks the agent, the other its own 204 location.
    const int with_agent = free_port(), with_ref = free_port();
    const int ref_port = free_port();
    const fs::path conf_agent = dir / "nginx-agent.conf", conf_ref = dir / "nginx-ref.conf";
    if (!write_nginx_conf(conf_agent, dir, with_agent, agent.port, free_port(), free_port(),
                          setup.workers) ||
        !write_nginx_conf(conf_ref, dir, with_ref, ref_port, free_port(), ref_port,
                          setup.workers)) {
      return false;
    }
    auto start_nginx = [&](const fs::path& conf, const std::string& name) {
      std::vector<std::string> a = prefix;
      for (const std::string& s :
           {std::string(fs::exists("/usr/sbin/nginx") ? "/usr/sbin/nginx" : "nginx"),
            std::string("-c"), conf.string(), std::string("-p"), dir.string(), std::string("-e"),
            std::string("stderr"), std::string("-g"), std::string("daemon off;")}) {
        a.push_back(s);
      }
      return spawn(a, dir / (name + ".log"));
    };
    const pid_t ng_agent = start_nginx(conf_agent, "nginx-agent");
    const pid_t ng_ref = start_nginx(conf_ref, "nginx-ref");
    const bool up = wait_until([&] {
      return get(with_agent, "/bench/item").status == 200 &&
             get(with_ref, "/bench/item").status == 200;
    });
    if (!up) {
      std::fprintf(stderr, "bench/agent: nginx did not answer 200 (%s)\n",
                   (dir / "nginx-error.log").c_str());
      stop(ng_agent);
      stop(ng_ref);
      stop(agent.pid);
      return false;
    }
    std::printf("  %s\n", setup.name);
    std::vector<double> a_rps, r_rps, ratios, a_p99, r_p99, a_cpu, r_cpu;
    const Histogram h0 = decision_histogram(agent.port);
    for (int i = 0; i < rounds; ++i) {
      const WrkResult a =
          wrk(setup.client_prefix, with_agent, setup.wrk_threads, 5, {ng_agent, agent.pid});
      const WrkResult r = wrk(setup.client_prefix, with_ref, setup.wrk_threads, 5, {ng_ref});
      a_cpu.push_back(a.cpu_us);
      r_cpu.push_back(r.cpu_us);
      a_rps.push_back(a.rps);
      r_rps.push_back(r.rps);
      a_p99.push_back(a.p99_ms);
      r_p99.push_back(r.p99_ms);
      if (r.rps > 0) ratios.push_back(a.rps / r.rps);
      std::printf(
          "    round %d: agent %8.0f req/s (p99 %5.2f ms, %5.1f us cpu/req) | 204 location "
          "%8.0f req/s (p99 %5.2f ms, %5.1f us cpu/req) | ratio %.2fx\n",
          i + 1, a.rps, a.p99_ms, a.cpu_us, r.rps, r.p99_ms, r.cpu_us,
          r.rps > 0 ? a.rps / r.rps : 0.0);
    }
    const Histogram h1 = decision_histogram(agent.port);
    std::printf(
        "    median: agent %.0f req/s (%s), 204 location %.0f req/s (%s); ratio of the "
        "medians %.2fx, median of the rounds' ratios %.2fx (%s) (target >= 0.8); p99 "
        "%.2f ms vs %.2f ms\n",
        median_of(a_rps), range(a_rps, "%.0f").c_str(), median_of(r_rps),
        range(r_rps, "%.0f").c_str(),
        median_of(r_rps) > 0 ? median_of(a_rps) / median_of(r_rps) : 0, median_of(ratios),
        range(ratios, "%.2f").c_str(), median_of(a_p99), median_of(r_p99));
    std::printf(
        "    CPU per request (nginx + agent vs nginx): %.1f us vs %.1f us, so the "
        "throughput the CPU allows is %.2fx (less sensitive to other load than req/s)\n",
        median_of(a_cpu), median_of(r_cpu),
        median_of(a_cpu) > 0 ? median_of(r_cpu) / median_of(a_cpu) : 0);
    std::printf(
        "    the agent's own histogram over these rounds (%.0f decisions): p50 <= %g us, "
        "p99 <= %g us, p99.9 <= %g us (bucket bounds)\n",
        h1.count - h0.count, histogram_bound(h0, h1, 0.5) * 1e6,
        histogram_bound(h0, h1, 0.99) * 1e6, histogram_bound(h0, h1, 0.999) * 1e6);
    stop(ng_agent);
    stop(ng_ref);
    stop(agent.pid);
  }
  stop(controller.pid);
  return true;
}

// --- (c) RSS ---

bool bench_rss(const fs::path& dir) {
  std::printf(
      "\n(c) the agent's RSS (VmRSS), default threads, after start and after 20,000 "
      "decisions (targets <= 12 MiB seed, <= 24 MiB 1,000 rules)\n");
  struct Case {
    const char* what;
    fs::path manifests;
  };
  fs::copy(fs::path(TOLLGATE_SOURCE_DIR) / "examples/seed", dir / "c-seed");
  const Case cases[] = {{"seed table", dir / "c-seed"},
                        {"1,000-rule table", manifests(dir / "c-1000", 1000, {"backend"})}};
  int n = 0;
  for (const Case& c : cases) {
    const std::string name = "c-" + std::to_string(++n);
    const Controller controller = start_controller(dir, c.manifests, "controller-" + name);
    const Agent agent =
        start_agent(dir, controller.port, "backend", "agent-" + name, {}, {"--log-level", "warn"});
    if (!wait_until([&] { return agent_ready(agent); })) return false;
    const std::size_t bytes = get(controller.port, "/v1/tables/default/backend").body.size();
    std::this_thread::sleep_for(500ms);
    const std::size_t started = rss_kib(agent.pid);
    // 20,000 decisions on 8 kept-alive connections (HTTP/1.1 pipelining is not needed).
    std::vector<std::thread> clients;
    clients.reserve(8);
    for (int t = 0; t < 8; ++t) {
      clients.emplace_back([&] {
        const int fd = connect_to(agent.port);
        const std::string req =
            "GET /v1/authz HTTP/1.1\r\nHost: a\r\nX-Original-Method: GET\r\nX-Original-URI: "
            "/api/v1/data\r\nX-Real-IP: 10.1.2.3\r\n\r\n";
        for (int i = 0; i < 2500; ++i) {
          (void)!write(fd, req.data(), req.size());
          if (read_answer(fd).empty()) break;
        }
        close(fd);
      });
    }
    for (auto& t : clients) t.join();
    const std::size_t after = rss_kib(agent.pid);
    const Memory m = memory_of(agent.pid);
    std::printf(
        "  %-18s (table %7zu bytes of JSON): %5.1f MiB after start, %5.1f MiB after "
        "20,000 decisions: %.1f MiB anonymous (the agent's own), %.1f MiB shared clean "
        "(mapped binary and libraries)\n",
        c.what, bytes, static_cast<double>(started) / 1024.0, static_cast<double>(after) / 1024.0,
        static_cast<double>(m.anonymous) / 1024.0, static_cast<double>(m.shared_clean) / 1024.0);
    std::printf("    largest mapped files:");
    for (const auto& [kib, file] : m.largest) {
      std::printf(" %s %.1f MiB", file.c_str(), static_cast<double>(kib) / 1024.0);
    }
    std::printf("\n");
    stop(agent.pid);
    stop(controller.pid);
  }
  return true;
}

// --- (d) publish -> deciding, 1,000 long-polls ---

// The "ts" of the first log line in `log` with msg `msg` and revision `revision`, as
// milliseconds since the epoch (0 if none yet).
std::int64_t logged_at(const fs::path& log, const std::string& msg, const std::string& revision) {
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find(msg) == std::string::npos) continue;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || j.value("msg", "") != msg || j.value("revision", "") != revision)
      continue;
    if (auto t = util::parse_rfc3339(j.value("ts", ""))) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(t->time_since_epoch()).count();
    }
  }
  return 0;
}

double parked(int controller_port) {
  std::istringstream in(get(controller_port, "/metrics").body);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("tollgate_parked_long_polls ", 0) == 0) return std::atof(line.c_str() + 27);
  }
  return -1;
}

struct Poller {
  std::string pod, etag;
  int fd = -1;
};

bool park(Poller& p, int port) {
  p.fd = connect_to(port);
  if (p.fd < 0) return false;
  const std::string req = "GET /v1/tables/default/" + p.pod +
                          " HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: " + p.etag +
                          "\r\nPrefer: wait=300\r\nConnection: close\r\n\r\n";
  return write(p.fd, req.data(), req.size()) == static_cast<ssize_t>(req.size());
}

bool bench_fanout(const fs::path& dir, int rounds, int real_agents) {
  constexpr int kPods = 1000;
  std::printf(
      "\n(d) controller publish -> agent deciding with the new table: %d real agents "
      "and %d simulated long-pollers (raw sockets) = %d long-polls on one controller, "
      "each for its own pod; a policy written into --manifests changes all %d tables "
      "(target p99 <= 50 ms)\n",
      real_agents, kPods - real_agents, kPods, kPods);
  std::vector<std::string> pods;
  pods.reserve(kPods);
  for (int i = 0; i < kPods; ++i) pods.push_back("backend-" + std::to_string(i));
  const fs::path m = manifests(dir / "d-manifests", 10, pods);
  const Controller controller = start_controller(dir, m, "controller-d");
  std::vector<Agent> agents;
  agents.reserve(static_cast<std::size_t>(real_agents));
  for (int i = 0; i < real_agents; ++i) {
    agents.push_back(start_agent(dir, controller.port, pods[static_cast<std::size_t>(i)],
                                 "agent-d-" + std::to_string(i)));
  }
  for (const Agent& a : agents) {
    if (!wait_until([&] { return agent_ready(a); })) {
      std::fprintf(stderr, "bench/agent: %s not ready\n", a.log.c_str());
      return false;
    }
  }
  std::vector<Poller> pollers;
  for (int i = real_agents; i < kPods; ++i) {
    Poller p;
    p.pod = pods[static_cast<std::size_t>(i)];
    p.etag = get(controller.port, "/v1/tables/default/" + p.pod).headers["etag"];
    pollers.push_back(p);
  }
  std::vector<double> agent_ms, poller_ms, publish_ms;
  std::vector<double> round_p99;
  const std::string change =
      "kind: AuthorizationPolicy\nmetadata: {name: bench-change, namespace: default}\nspec:\n"
      "  selector: {matchLabels: {app: backend}}\n  action: DENY\n  rules: [{to: "
      "[{operation: {paths: [\"/changed\"]}}]}]\n";
  for (int round = 0; round < rounds; ++round) {
    const int ep = epoll_create1(0);
    for (Poller& p : pollers) {
      if (!park(p, controller.port)) return false;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLONESHOT;
      ev.data.ptr = &p;
      epoll_ctl(ep, EPOLL_CTL_ADD, p.fd, &ev);
    }
    if (!wait_until([&] { return parked(controller.port) >= kPods; })) {
      std::fprintf(stderr, "bench/agent: only %.0f long-polls parked\n", parked(controller.port));
      return false;
    }
    const double controller_cpu0 = process_cpu_seconds(controller.pid);
    double agents_cpu0 = 0;
    for (const Agent& a : agents) agents_cpu0 += process_cpu_seconds(a.pid);
    // Add the policy on even rounds, remove it on odd ones: every table changes each time.
    const auto written = std::chrono::system_clock::now();
    const fs::path file = m / "bench-change.yaml";
    if (round % 2 == 0) {
      std::ofstream(dir / "change.tmp") << change;
      fs::rename(dir / "change.tmp", file);
    } else {
      fs::remove(file);
    }
    std::vector<std::int64_t> arrivals;  // wall clock, ms
    std::vector<epoll_event> events(1024);
    std::size_t answered = 0;
    const auto deadline = Clock::now() + 60s;
    while (answered < pollers.size() && Clock::now() < deadline) {
      const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
      const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
      for (int i = 0; i < n; ++i) {
        arrivals.push_back(now_ms);
        ++answered;
      }
    }
    close(ep);
    // Read each answer, keep its new ETag for the next round.
    std::string revision;
    for (Poller& p : pollers) {
      const Reply r = parse_reply(read_answer(p.fd));
      close(p.fd);
      if (r.status == 200) {
        p.etag = r.headers.at("etag");
        revision = r.headers.at("x-tollgate-revision");
      }
    }
    if (revision.empty()) {
      std::fprintf(stderr, "bench/agent: no long-poll was answered with a new table\n");
      return false;
    }
    const std::int64_t published = logged_at(controller.log, "snapshot published", revision);
    std::vector<double> this_round;
    for (const Agent& a : agents) {
      std::int64_t at = 0;
      wait_until([&] { return (at = logged_at(a.log, "table activated", revision)) != 0; }, 30s);
      if (at == 0) {
        std::fprintf(stderr, "bench/agent: %s never activated revision %s\n", a.log.c_str(),
                     revision.c_str());
        return false;
      }
      this_round.push_back(static_cast<double>(at - published));
    }
    double agents_cpu = -agents_cpu0;
    for (const Agent& a : agents) agents_cpu += process_cpu_seconds(a.pid);
    const double controller_cpu = process_cpu_seconds(controller.pid) - controller_cpu0;
    std::vector<double> sim;
    sim.reserve(arrivals.size());
    for (const auto t : arrivals) sim.push_back(static_cast<double>(t - published));
    const double written_ms = static_cast<double>(
        std::chrono::duration_cast<std::chrono::milliseconds>(written.time_since_epoch()).count());
    publish_ms.push_back(static_cast<double>(published) - written_ms);
    std::printf(
        "  round %d (revision %s): file -> publish %4.0f ms; publish -> agent activated "
        "p50 %3.0f p99 %3.0f max %3.0f ms; publish -> simulated poller answered p50 %3.0f "
        "p99 %3.0f max %3.0f ms (%zu of %zu)\n",
        round + 1, revision.c_str(), publish_ms.back(), percentile(this_round, 0.5),
        percentile(this_round, 0.99), percentile(this_round, 1.0), percentile(sim, 0.5),
        percentile(sim, 0.99), percentile(sim, 1.0), answered, pollers.size());
    std::printf(
        "    CPU from the write to the last activation: controller %.0f ms (inotify, "
        "compile, %d answers), the %zu agents %.0f ms together (%.2f ms each: read, "
        "verify, activate, persist, log, ask again)\n",
        controller_cpu * 1000, kPods, agents.size(), agents_cpu * 1000,
        agents_cpu * 1000 / static_cast<double>(std::max<std::size_t>(1, agents.size())));
    round_p99.push_back(percentile(this_round, 0.99));
    agent_ms.insert(agent_ms.end(), this_round.begin(), this_round.end());
    poller_ms.insert(poller_ms.end(), sim.begin(), sim.end());
  }
  std::printf(
      "  all rounds: publish -> agent deciding with the new table p50 %.0f ms, p99 %.0f "
      "ms (rounds' p99 %s ms), max %.0f ms over %zu activations (target p99 <= 50 ms); "
      "simulated pollers p99 %.0f ms; file -> publish median %.0f ms (log timestamps: "
      "1 ms resolution)\n",
      percentile(agent_ms, 0.5), percentile(agent_ms, 0.99), range(round_p99, "%.0f").c_str(),
      percentile(agent_ms, 1.0), agent_ms.size(), percentile(poller_ms, 0.99),
      median_of(publish_ms));
  for (const Agent& a : agents) kill(a.pid, SIGTERM);
  for (const Agent& a : agents) waitpid(a.pid, nullptr, 0);
  stop(controller.pid);
  return true;
}

int run(int argc, char** argv) {
  std::string only;
  int real_agents = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--only") {
      only = argv[i + 1];
    } else if (a == "--agents") {
      real_agents = std::clamp(std::atoi(argv[i + 1]), 1, 1000);
    } else {
      std::fprintf(stderr, "usage: agent [--only a|b|c|d] [--agents N]\n");
      return 2;
    }
  }
  int rounds = 5;
  if (const char* r = std::getenv("TOLLGATE_BENCH_ROUNDS")) rounds = std::max(1, std::atoi(r));
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  nofile.rlim_cur = nofile.rlim_max;
  setrlimit(RLIMIT_NOFILE, &nofile);
  signal(SIGPIPE, SIG_IGN);
  util::set_log_level(util::LogLevel::kWarn);
  char tmpl[] = "/tmp/tollgate-bench-agent-XXXXXX";
  const fs::path dir = mkdtemp(tmpl);
  char state_tmpl[] = "/dev/shm/tollgate-bench-agent-XXXXXX";
  g_state_root =
      fs::is_directory("/dev/shm") && mkdtemp(state_tmpl) != nullptr ? fs::path(state_tmpl) : dir;
  std::printf("bench/agent: %u cores; the agents' --state-dir in %s; load average at start: ",
              std::thread::hardware_concurrency(), g_state_root.c_str());
  std::fflush(stdout);
  (void)!std::system("cut -d' ' -f1-3 /proc/loadavg");
  bool ok = true;
  if (ok && (only.empty() || only == "b")) bench_decision(dir);
  if (ok && (only.empty() || only == "a")) ok = bench_throughput(dir, rounds);
  if (ok && (only.empty() || only == "c")) ok = bench_rss(dir);
  if (ok && (only.empty() || only == "d")) ok = bench_fanout(dir, rounds, real_agents);
  if (g_state_root != dir) fs::remove_all(g_state_root);
  if (ok) {
    fs::remove_all(dir);
  } else {
    std::fprintf(stderr, "bench/agent: failed; kept %s\n", dir.c_str());
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench/agent: %s\n", e.what());
    return 1;
  }
}
