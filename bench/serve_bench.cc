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

#include "support.h"

extern char** environ;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

using namespace tollgate::bench;

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

struct WrkResult {
  double rps = 0, p99_ms = 0;
  double requests = 0;    // served in the round
  double cpu_us_per = 0;  // the server's CPU time (user + system) per request, in µs
};

// Median req/s, median p99 and median CPU per request, each taken on its own.
WrkResult median(const std::vector<WrkResult>& v) {
  WrkResult m;
  std::vector<double> rps, p99, cpu;
  for (const auto& r : v) {
    rps.push_back(r.rps);
    p99.push_back(r.p99_ms);
    cpu.push_back(r.cpu_us_per);
  }
  m.rps = median_of(rps);
  m.p99_ms = median_of(p99);
  m.cpu_us_per = median_of(cpu);
  return m;
}

void print_pair(const char* what, const WrkResult& t, const WrkResult& n) {
  std::printf(
      "%-28s tollgate %8.0f req/s p99 %6.2f ms %5.1f us cpu/req | nginx %8.0f req/s p99 %6.2f "
      "ms %5.1f us cpu/req | ratio %.2fx (target >= 0.8), p99 %s\n",
      what, t.rps, t.p99_ms, t.cpu_us_per, n.rps, n.p99_ms, n.cpu_us_per,
      n.rps > 0 ? t.rps / n.rps : 0.0, t.p99_ms <= n.p99_ms ? "no worse" : "WORSE");
}

const char* kExtraPolicy = R"(apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bench-change, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin"]}}]}]
)";

const char* kTarget = "/v1/tables/default/backend";

struct Setup {
  const char* name;
  std::vector<std::string> server_prefix, client_prefix;  // e.g. taskset -c 0
  int server_threads;  // tollgate --http-threads; nginx worker_processes
  int wrk_threads;
};

WrkResult wrk(int port, pid_t server, const std::string& target, const std::string& header,
              int seconds, const Setup& setup) {
  std::string cmd;
  for (const auto& p : setup.client_prefix) cmd += p + " ";
  cmd += "wrk -t" + std::to_string(setup.wrk_threads) + " -c64 -d" + std::to_string(seconds) +
         "s --latency";
  if (!header.empty()) cmd += " -H '" + header + "'";
  cmd += " http://127.0.0.1:" + std::to_string(port) + target + " 2>&1";
  WrkResult r;
  const double cpu0 = cpu_seconds(server);
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char line[512];
  while (std::fgets(line, sizeof line, p) != nullptr) {
    std::string s(line);
    if (s.find("Requests/sec:") != std::string::npos) r.rps = std::atof(s.c_str() + 13);
    if (s.find(" 99%") != std::string::npos) r.p99_ms = to_ms(s.substr(s.find("99%") + 3));
    if (s.find(" requests in ") != std::string::npos) r.requests = std::atof(s.c_str());
  }
  pclose(p);
  if (r.requests > 0) r.cpu_us_per = (cpu_seconds(server) - cpu0) * 1e6 / r.requests;
  return r;
}

struct Started {
  pid_t pid = -1;
  int port = 0;
};

// Starts `tollgate run` on the seed manifests (with `prefix`, e.g. taskset) and waits for its
// port. threads 0: tollgate's default.
Started start_tollgate(const fs::path& dir, const std::string& name,
                       const std::vector<std::string>& prefix, int threads) {
  const std::string port_file = (dir / ("port-" + name)).string();
  std::vector<std::string> args = prefix;
  for (const std::string& a :
       {std::string(TOLLGATE_BINARY), std::string("run"), std::string("--manifests"),
        (dir / "manifests").string(), std::string("--listen"), std::string("127.0.0.1:0"),
        std::string("--port-file"), port_file}) {
    args.push_back(a);
  }
  if (threads > 0) {
    args.emplace_back("--http-threads");
    args.push_back(std::to_string(threads));
  }
  if (!prefix.empty()) args[0] = "/usr/bin/" + args[0];
  Started s;
  s.pid = spawn(args, (dir / ("tollgate-" + name + ".log")).string());
  for (int i = 0; i < 200 && s.port == 0; ++i) {
    std::this_thread::sleep_for(50ms);
    std::ifstream in(port_file);
    in >> s.port;
  }
  if (s.port == 0) {
    std::fprintf(stderr, "bench/serve: tollgate did not start (%s)\n",
                 (dir / ("tollgate-" + name + ".log")).c_str());
  }
  return s;
}

// GETs `target` until it answers 200 (a few seconds at most).
Reply fetch(int port, const std::string& target) {
  Reply r;
  for (int i = 0; i < 100 && r.status != 200; ++i) {
    r = get(port, target);
    if (r.status != 200) std::this_thread::sleep_for(50ms);
  }
  if (r.status != 200)
    std::fprintf(stderr, "bench/serve: %s answered %d\n", target.c_str(), r.status);
  return r;
}

void stop(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
}

// wrk against tollgate and against nginx serving the same bytes as a static file with the
// same headers, 200 and 304, in alternating rounds; prints each round and the medians.
bool compare(const fs::path& dir, const Setup& setup, int rounds) {
  const std::string name = setup.server_prefix.empty() ? "shared" : "isolated";
  const auto tg = start_tollgate(dir, name, setup.server_prefix, setup.server_threads);
  if (tg.port == 0) return false;
  const Reply table = fetch(tg.port, kTarget);
  if (table.status != 200) {
    stop(tg.pid);
    return false;
  }
  const std::string etag = table.headers.at("etag");
  const fs::path www = dir / ("www-" + name);
  fs::create_directories(www / "v1/tables/default");
  std::ofstream(www / "v1/tables/default/backend", std::ios::binary) << table.body;
  const int ng_port = free_port();
  const fs::path conf = dir / ("nginx-" + name + ".conf");
  // open_file_cache: nginx at its best for one hot file (no open/fstat per request).
  std::ofstream(conf) << "worker_processes " << setup.server_threads << ";\ndaemon off;\npid "
                      << (dir / ("nginx-" + name + ".pid")).string() << ";\nerror_log "
                      << (dir / "nginx.err").string()
                      << ";\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n"
                      << "  open_file_cache max=16 inactive=60s;\n  open_file_cache_valid 60s;\n"
                      << "  client_body_temp_path " << dir.string() << ";\n  proxy_temp_path "
                      << dir.string() << ";\n  fastcgi_temp_path " << dir.string()
                      << ";\n  uwsgi_temp_path " << dir.string() << ";\n  scgi_temp_path "
                      << dir.string() << ";\n"
                      << "  server {\n    listen 127.0.0.1:" << ng_port << ";\n    root "
                      << www.string() << ";\n    default_type application/json;\n"
                      << "    add_header X-Tollgate-Revision \""
                      << table.headers.at("x-tollgate-revision")
                      << "\";\n    add_header X-Tollgate-Synced-At \""
                      << table.headers.at("x-tollgate-synced-at") << "\";\n  }\n}\n";
  std::vector<std::string> ng_args = setup.server_prefix;
  for (const std::string& a : {std::string("/usr/sbin/nginx"), std::string("-c"), conf.string(),
                               std::string("-p"), dir.string()}) {
    ng_args.push_back(a);
  }
  if (!setup.server_prefix.empty()) ng_args[0] = "/usr/bin/" + ng_args[0];
  const pid_t ng = spawn(ng_args, (dir / ("nginx-" + name + ".log")).string());
  const Reply ng_table = fetch(ng_port, kTarget);
  if (ng_table.status != 200 || ng_table.body != table.body) {
    std::fprintf(stderr, "bench/serve: nginx did not serve the table (%s)\n",
                 (dir / "nginx.err").c_str());
    stop(tg.pid);
    stop(ng);
    return false;
  }
  const std::string ng_etag = ng_table.headers.at("etag");
  std::printf("%s: table %s, %zu bytes\n", setup.name, kTarget, table.body.size());
  const int secs = 5;
  const struct {
    const char* what;
    std::string tg_header, ng_header;
  } cases[] = {{"200 (full table)", "", ""},
               {"304 (If-None-Match)", "If-None-Match: " + etag, "If-None-Match: " + ng_etag}};
  for (const auto& c : cases) {
    std::vector<WrkResult> t, n;
    std::vector<double> ratios;
    for (int i = 0; i < rounds; ++i) {
      t.push_back(wrk(tg.port, tg.pid, kTarget, c.tg_header, secs, setup));
      n.push_back(wrk(ng_port, ng, kTarget, c.ng_header, secs, setup));
      print_pair(("  round " + std::to_string(i + 1)).c_str(), t.back(), n.back());
      if (n.back().rps > 0) ratios.push_back(t.back().rps / n.back().rps);
    }
    print_pair((std::string(c.what) + ", median").c_str(), median(t), median(n));
    // On a busy machine the rounds' own ratios (each pair measured back to back) and the CPU
    // time per request move less than req/s.
    std::printf("%-28s median of the rounds' ratios %.2fx; cpu/req tollgate / nginx %.2f\n", "",
                median_of(ratios),
                median(n).cpu_us_per > 0 ? median(t).cpu_us_per / median(n).cpu_us_per : 0.0);
  }
  stop(tg.pid);
  stop(ng);
  return true;
}

struct Arrivals {
  std::size_t answered = 0;
  Clock::time_point first{}, last{};
};

// Waits until every fd (registered EPOLLIN | EPOLLONESHOT on `ep`) is readable. An answer
// counts when it reaches the client's socket: the client polls without reading, and sleeps
// between polls so that senders do not pay for waking it.
Arrivals await_answers(int ep, std::size_t n) {
  Arrivals a;
  std::vector<epoll_event> events(4096);
  const auto deadline = Clock::now() + 30s;
  while (a.answered < n && Clock::now() < deadline) {
    const int got = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 0);
    if (got <= 0) {
      std::this_thread::sleep_for(200us);
      continue;
    }
    const auto now = Clock::now();
    if (a.answered == 0) a.first = now;
    a.last = now;
    a.answered += static_cast<std::size_t>(got);
  }
  return a;
}

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The floor on this machine: the same response bytes written to `n` loopback connections by
// two threads doing nothing else, measured the same way. Returns first -> last in ms.
double send_floor(const std::string& response, int n) {
  const int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  listen(lfd, 4096);
  socklen_t len = sizeof a;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  const int ep = epoll_create1(0);
  std::vector<int> clients, servers;
  for (int i = 0; i < n; ++i) {
    const int c = connect_to(ntohs(a.sin_port));
    if (c < 0) break;
    const int sfd = accept(lfd, nullptr, nullptr);
    if (sfd < 0) {
      close(c);
      break;
    }
    int one = 1;
    setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLONESHOT;
    ev.data.fd = c;
    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    clients.push_back(c);
    servers.push_back(sfd);
  }
  std::this_thread::sleep_for(200ms);
  auto writer = [&](std::size_t from, std::size_t step) {
    for (std::size_t i = from; i < servers.size(); i += step) {
      (void)!write(servers[i], response.data(), response.size());
    }
  };
  std::thread t1(writer, 0, 2), t2(writer, 1, 2);
  const auto arrivals = await_answers(ep, clients.size());
  t1.join();
  t2.join();
  for (int fd : clients) close(fd);
  for (int fd : servers) close(fd);
  close(ep);
  close(lfd);
  return arrivals.answered == clients.size() ? ms(arrivals.last - arrivals.first) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  // --only wrk | --only longpoll: run one half (e.g. to profile it).
  std::string only;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--only") only = argv[i + 1];
  }
  if (!only.empty() && only != "wrk" && only != "longpoll") {
    std::fprintf(stderr, "usage: serve [--only wrk|longpoll]\n");
    return 2;
  }
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  nofile.rlim_cur = nofile.rlim_max;
  setrlimit(RLIMIT_NOFILE, &nofile);
  const int parked_target = static_cast<int>(std::min<rlim_t>(10000, nofile.rlim_cur - 200));
  signal(SIGPIPE, SIG_IGN);

  char tmpl[] = "/tmp/tollgate-serve-XXXXXX";
  const fs::path dir = mkdtemp(tmpl);
  fs::copy(TOLLGATE_SOURCE_DIR "/examples/seed", dir / "manifests");
  int rounds = 5;
  if (const char* r = std::getenv("TOLLGATE_BENCH_ROUNDS")) rounds = std::max(1, std::atoi(r));

  if (only != "longpoll") {
    // Isolated: each server on CPU 0 with one worker, wrk on CPU 1, so the figures are the
    // server's own. Shared: two workers each, all on both cores with wrk, as the machine runs
    // by default; there the tail is mostly the scheduler sharing cores between client and
    // server.
    const Setup setups[] = {
        {"isolated: server (1 worker) on CPU 0, wrk -t1 -c64 on CPU 1",
         {"taskset", "-c", "0"},
         {"taskset", "-c", "1"},
         1,
         1},
        {"shared: server (2 workers) and wrk -t2 -c64 on the same 2 cores", {}, {}, 2, 2}};
    for (const auto& setup : setups) {
      if (!setup.server_prefix.empty() && std::thread::hardware_concurrency() < 2) continue;
      if (!compare(dir, setup, rounds)) {
        fs::remove_all(dir);
        return 1;
      }
    }
  }
  if (only == "wrk") {
    fs::remove_all(dir);
    return 0;
  }

  // Long-polls, against tollgate as it runs by default: parked requests, then one publish
  // answers them all.
  const auto started = start_tollgate(dir, "longpoll", {}, 0);
  if (started.port == 0) return 1;
  const pid_t tg = started.pid;
  const int tg_port = started.port;
  const Reply table = fetch(tg_port, kTarget);
  if (table.status != 200) return 1;
  const std::string target = kTarget;
  const std::string etag = table.headers.at("etag");
  std::this_thread::sleep_for(300ms);
  std::printf("tollgate pid %d\n", static_cast<int>(tg));
  std::fflush(stdout);
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
    ev.events = EPOLLIN | EPOLLONESHOT;
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
  // TOLLGATE_BENCH_PAUSE=N: wait N more seconds before the publish (time to attach perf).
  if (const char* pause = std::getenv("TOLLGATE_BENCH_PAUSE")) {
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(std::atoi(pause)));
  }
  // A change to backend's policies: inotify -> reload -> publish -> every parked request. An
  // answer counts when it reaches the client's socket (EPOLLONESHOT readiness, no read), so the
  // client's own reading does not slow the figure; the answers are read and checked afterwards.
  const auto written = Clock::now();
  std::ofstream(dir / "manifests/bench-change.yaml") << kExtraPolicy;
  const auto arrivals = await_answers(ep, fds.size());
  std::size_t ok200 = 0;
  std::string response;
  char buf[65536];
  for (int fd : fds) {
    const ssize_t got = read(fd, buf, sizeof buf);
    if (got >= 12 && std::strncmp(buf, "HTTP/1.1 200", 12) == 0) {
      ++ok200;
      if (response.empty()) response.assign(buf, static_cast<std::size_t>(got));
    }
  }
  std::printf(
      "after the publish: %zu of %zu answered (%zu with 200 and the new table); first -> last "
      "answer %.1f ms (target <= 50 ms for 10,000); file written -> last answer %.1f ms "
      "(includes inotify, reload and compile)\n",
      arrivals.answered, fds.size(), ok200, ms(arrivals.last - arrivals.first),
      ms(arrivals.last - written));
  for (int fd : fds) close(fd);
  close(ep);
  kill(tg, SIGTERM);
  int status = 0;
  waitpid(tg, &status, 0);
  std::printf("tollgate exited with %d after SIGTERM\n",
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  if (!response.empty()) {
    const double floor = send_floor(response, static_cast<int>(fds.size()));
    std::printf(
        "reference: the same %zu-byte answer written to %zu loopback connections by a bare "
        "2-thread write loop: %.1f ms; tollgate / reference %.2fx\n",
        response.size(), fds.size(), floor,
        floor > 0 ? ms(arrivals.last - arrivals.first) / floor : 0.0);
  }
  fs::remove_all(dir);
  return 0;
}
