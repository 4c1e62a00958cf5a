// What the benchmarks that drive processes share (bench/serve, bench/agent): loopback
// sockets, a blocking HTTP/1.1 GET, a process's RSS and CPU time, wrk's latency units and
// medians. Header-only; every function is safe to call from any thread.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tollgate/util/strings.h"

namespace tollgate::bench {

struct Reply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// A whole HTTP/1.1 answer as received; status 0 when it is not one.
inline Reply parse_reply(const std::string& all) {
  Reply r;
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
    const std::string name = tollgate::util::lowered(line.substr(0, colon));
    const auto start = line.find_first_not_of(' ', colon + 1);
    r.headers[name] = start == std::string::npos ? "" : line.substr(start);
  }
  r.body = all.substr(end + 4);
  return r;
}

// A connected TCP socket to 127.0.0.1:port, or -1.
inline int connect_to(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
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

// One blocking HTTP/1.1 GET with Connection: close; `extra` header lines end in \r\n.
inline Reply get(int port, const std::string& target, const std::string& extra = "") {
  const int fd = connect_to(port);
  if (fd < 0) return {};
  const std::string req =
      "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "Connection: close\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string all;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;)
    all.append(buf, static_cast<std::size_t>(n));
  close(fd);
  return parse_reply(all);
}

// A port free on 127.0.0.1 at the time of the call.
inline int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  (void)bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// VmRSS of `pid`, KiB.
inline std::size_t rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  }
  return 0;
}

// CPU seconds used so far by `pid` and its children that are still running (nginx's workers).
inline double cpu_seconds(pid_t pid) {
  const auto ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  double total = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::ifstream in(e.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    const auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream fields(stat.substr(close_paren + 2));
    std::string f[13];  // state, ppid, ..., utime (11), stime (12)
    for (auto& x : f) fields >> x;
    const pid_t self = std::atoi(e.path().filename().c_str());
    if (self == pid || std::atoi(f[1].c_str()) == pid) {
      total += (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) / ticks;
    }
  }
  return total;
}

// A wrk latency ("812.00us", "1.20ms", "2.01s") in milliseconds.
inline double to_ms(const std::string& v) {
  const double x = std::atof(v.c_str());
  if (v.find("us") != std::string::npos) return x / 1000;
  if (v.find("ms") != std::string::npos) return x;
  if (v.find('s') != std::string::npos) return x * 1000;
  return x;
}

inline double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace tollgate::bench
