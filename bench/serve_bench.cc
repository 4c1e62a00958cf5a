// bench/serve: tollgate's table endpoint against nginx serving the same bytes as a static file,
// both measured with wrk in one run (200 and 304), then 10,000 parked long-polls: tollgate's
// RSS per parked request and the time for all of them to be answered after a publish.
// Needs wrk and nginx (scripts/install-deps.sh installs them). Prints figures and ratios.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

struct Reply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

int connect_to(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// One blocking HTTP/1.1 GET with Connection: close.
Reply get(int port, const std::string& target, const std::string& extra = "") {
  Reply r;
  const int fd = connect_to(port);
  if (fd < 0) return r;
  const std::string req =
      "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "Connection: close\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string all;
  char buf[65536];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    all.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  const auto end = all.find("\r\n\r\n");
  if (end == std::string::npos || all.size() < 12) return r;
  r.status = std::atoi(all.c_str() + 9);
  std::istringstream head(all.substr(0, end));
  std::string line;
  std::getline(head, line);
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
  }
  r.body = all.substr(end + 4);
  return r;
}

pid_t spawn(const std::vector<std::string>& args, const std::string& out_file) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, out_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  pid_t pid = 0;
  if (posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

std::size_t rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  }
  return 0;
}

struct WrkResult {
  double rps = 0, p99_ms = 0;
};

double to_ms(const std::string& v) {
  const double x = std::atof(v.c_str());
  if (v.find("us") != std::string::npos) return x / 1000;
  if (v.find("ms") != std::string::npos) return x;
  if (v.find('s') != std::string::npos) return x * 1000;
  return x;
}

WrkResult wrk(int port, const std::string& target, const std::string& header, int seconds) {
  std::string cmd = "wrk -t2 -c64 -d" + std::to_string(seconds) + "s --latency";
  if (!header.empty()) cmd += " -H '" + header + "'";
  cmd += " http://127.0.0.1:" + std::to_string(port) + target + " 2>&1";
  WrkResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char line[512];
  std::string non2xx;
  while (std::fgets(line, sizeof line, p) != nullptr) {
    std::string s(line);
    if (s.find("Requests/sec:") != std::string::npos) r.rps = std::atof(s.c_str() + 13);
    if (s.find(" 99%") != std::string::npos) r.p99_ms = to_ms(s.substr(s.find("99%") + 3));
    if (s.find("Non-2xx") != std::string::npos) non2xx = s;
  }
  pclose(p);
  return r;
}

void print_pair(const char* what, const WrkResult& t, const WrkResult& n) {
  std::printf(
      "%-28s tollgate %8.0f req/s p99 %6.2f ms | nginx %8.0f req/s p99 %6.2f ms | "
      "ratio %.2fx (target >= 0.8), p99 %s\n",
      what, t.rps, t.p99_ms, n.rps, n.p99_ms, n.rps > 0 ? t.rps / n.rps : 0.0,
      t.p99_ms <= n.p99_ms ? "no worse" : "WORSE");
}

const char* kExtraPolicy = R"(apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bench-change, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin"]}}]}]
)";

}  // namespace

int main() {
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  nofile.rlim_cur = nofile.rlim_max;
  setrlimit(RLIMIT_NOFILE, &nofile);
  const int parked_target = static_cast<int>(std::min<rlim_t>(10000, nofile.rlim_cur - 200));
  signal(SIGPIPE, SIG_IGN);

  char tmpl[] = "/tmp/tollgate-serve-XXXXXX";
  const fs::path dir = mkdtemp(tmpl);
  fs::copy(TOLLGATE_SOURCE_DIR "/examples/seed", dir / "manifests");
  const std::string port_file = (dir / "port").string();
  const pid_t tg = spawn({TOLLGATE_BINARY, "run", "--manifests", (dir / "manifests").string(),
                          "--listen", "127.0.0.1:0", "--port-file", port_file},
                         (dir / "tollgate.log").string());
  int tg_port = 0;
  for (int i = 0; i < 200 && tg_port == 0; ++i) {
    std::this_thread::sleep_for(50ms);
    std::ifstream in(port_file);
    in >> tg_port;
  }
  if (tg_port == 0) {
    std::fprintf(stderr, "bench/serve: tollgate did not start (%s)\n",
                 (dir / "tollgate.log").c_str());
    return 1;
  }
  const std::string target = "/v1/tables/default/backend";
  Reply table;
  for (int i = 0; i < 100 && table.status != 200; ++i) {
    table = get(tg_port, target);
    if (table.status != 200) std::this_thread::sleep_for(50ms);
  }
  if (table.status != 200) {
    std::fprintf(stderr, "bench/serve: %s answered %d\n", target.c_str(), table.status);
    return 1;
  }
  const std::string etag = table.headers["etag"];
  std::printf("table %s: %zu bytes, ETag %s\n", target.c_str(), table.body.size(), etag.c_str());

  // nginx with the same bytes at the same path and the same extra headers.
  const int ng_port = free_port();
  fs::create_directories(dir / "www/v1/tables/default");
  std::ofstream(dir / "www/v1/tables/default/backend", std::ios::binary) << table.body;
  std::ofstream(dir / "nginx.conf")
      << "worker_processes 2;\ndaemon off;\npid " << (dir / "nginx.pid").string() << ";\nerror_log "
      << (dir / "nginx.err").string()
      << ";\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n"
      << "  client_body_temp_path " << dir.string() << ";\n  proxy_temp_path " << dir.string()
      << ";\n  fastcgi_temp_path " << dir.string() << ";\n  uwsgi_temp_path " << dir.string()
      << ";\n  scgi_temp_path " << dir.string() << ";\n"
      << "  server {\n    listen 127.0.0.1:" << ng_port << ";\n    root " << (dir / "www").string()
      << ";\n    default_type application/json;\n"
      << "    add_header X-Tollgate-Revision \"" << table.headers["x-tollgate-revision"]
      << "\";\n    add_header X-Tollgate-Synced-At \"" << table.headers["x-tollgate-synced-at"]
      << "\";\n  }\n}\n";
  const pid_t ng =
      spawn({"/usr/sbin/nginx", "-c", (dir / "nginx.conf").string(), "-p", dir.string()},
            (dir / "nginx.log").string());
  Reply ng_table;
  for (int i = 0; i < 100 && ng_table.status != 200; ++i) {
    std::this_thread::sleep_for(50ms);
    ng_table = get(ng_port, target);
  }
  if (ng_table.status != 200 || ng_table.body != table.body) {
    std::fprintf(stderr, "bench/serve: nginx did not serve the table (%s)\n",
                 (dir / "nginx.err").c_str());
    kill(tg, SIGTERM);
    return 1;
  }
  const std::string ng_etag = ng_table.headers["etag"];

  const int secs = 5;
  std::printf("wrk -t2 -c64 -d%ds, both servers on the same 2 cores as wrk:\n", secs);
  const auto t200 = wrk(tg_port, target, "", secs);
  const auto n200 = wrk(ng_port, target, "", secs);
  print_pair("200 (full table)", t200, n200);
  const auto t304 = wrk(tg_port, target, "If-None-Match: " + etag, secs);
  const auto n304 = wrk(ng_port, target, "If-None-Match: " + ng_etag, secs);
  print_pair("304 (If-None-Match)", t304, n304);
  kill(ng, SIGTERM);
  waitpid(ng, nullptr, 0);

  // Long-polls: parked requests, then one publish answers them all.
  std::this_thread::sleep_for(300ms);
  const std::size_t rss0 = rss_kib(tg);
  const int ep = epoll_create1(0);
  std::vector<int> fds;
  const std::string req = "GET " + target +
                          " HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: " + etag +
                          "\r\nPrefer: wait=120\r\n\r\n";
  for (int i = 0; i < parked_target; ++i) {
    const int fd = connect_to(tg_port);
    if (fd < 0) break;
    if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
      close(fd);
      break;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    fds.push_back(fd);
  }
  std::this_thread::sleep_for(2s);
  const std::size_t rss1 = rss_kib(tg);
  std::printf(
      "parked long-polls: %zu; tollgate RSS %.1f MB -> %.1f MB: %.2f KiB per parked "
      "request (target <= 4 KiB)\n",
      fds.size(), static_cast<double>(rss0) / 1024.0, static_cast<double>(rss1) / 1024.0,
      static_cast<double>(rss1 - rss0) / static_cast<double>(std::max<std::size_t>(1, fds.size())));
  // A change to backend's policies: inotify -> reload -> publish -> every parked request.
  std::ofstream(dir / "manifests/bench-change.yaml") << kExtraPolicy;
  std::size_t answered = 0, ok200 = 0;
  Clock::time_point first{}, last{};
  std::vector<epoll_event> events(1024);
  char buf[65536];
  const auto deadline = Clock::now() + 30s;
  while (answered < fds.size() && Clock::now() < deadline) {
    const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 1000);
    for (int i = 0; i < n; ++i) {
      const int fd = events[static_cast<std::size_t>(i)].data.fd;
      const ssize_t got = read(fd, buf, sizeof buf);
      if (got <= 0) continue;
      const auto now = Clock::now();
      if (answered == 0) first = now;
      last = now;
      ++answered;
      if (std::strncmp(buf, "HTTP/1.1 200", 12) == 0) ++ok200;
      epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    }
  }
  std::printf(
      "after the publish: %zu of %zu answered (%zu with 200 and the new table); first -> "
      "last answer %.1f ms (target <= 50 ms for 10,000)\n",
      answered, fds.size(), ok200, std::chrono::duration<double, std::milli>(last - first).count());
  for (int fd : fds) close(fd);
  close(ep);
  kill(tg, SIGTERM);
  int status = 0;
  waitpid(tg, &status, 0);
  std::printf("tollgate exited with %d after SIGTERM\n",
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  fs::remove_all(dir);
  return 0;
}
