// bench/ingest: `tollgate run` as a child process, for what only a separate process shows:
// start -> ready including process start, and the whole process's RSS.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/http_get.h"
#include "tollgate/util/strings.h"

extern char** environ;

namespace tollgate::bench {

using Clock = std::chrono::steady_clock;

inline std::size_t status_kib(pid_t pid, const char* field) {
  std::ifstream in("/proc/" + (pid == 0 ? std::string("self") : std::to_string(pid)) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::stoul(line.substr(std::string(field).size()));
  }
  return 0;
}

struct Child {
  pid_t pid = -1;
  std::uint16_t port = 0;
  double ready_seconds = -1;  // from spawn to the first /readyz 200
  std::string log;

  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { stop(); }
  void stop() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
    pid = -1;
  }
  std::size_t rss_kib() const { return status_kib(pid, "VmRSS:"); }
  // CPU time used (user + system), and the time its threads waited for a CPU (schedstat):
  // on a shared machine the second says how much of the wall time was other people's.
  double cpu_seconds() const {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string f;
    double ticks = 0;
    for (int i = 1; i <= 15 && in >> f; ++i) {
      if (i == 14 || i == 15) ticks += std::stod(f);
    }
    return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  double runqueue_wait_seconds() const {
    double ns = 0;
    for (const auto& t :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
      std::ifstream in(t.path() / "schedstat");
      double run = 0, wait = 0;
      if (in >> run >> wait) ns += wait;
    }
    return ns / 1e9;
  }
  std::size_t peak_kib() const { return status_kib(pid, "VmHWM:"); }
};

// Spawns `tollgate run ARGS --listen 127.0.0.1:0 --port-file ...` and waits (polling: it is
// another process) until /readyz answers 200, at most `timeout`.
inline bool start_child(Child& c, const std::string& binary, const std::vector<std::string>& args,
                        const std::string& scratch, std::chrono::seconds timeout) {
  const std::string port_file = scratch + "/port";
  c.log = scratch + "/tollgate.log";
  ::unlink(port_file.c_str());
  std::vector<std::string> all = {binary, "run"};
  all.insert(all.end(), args.begin(), args.end());
  for (const char* a : {"--listen", "127.0.0.1:0", "--port-file"}) all.emplace_back(a);
  all.push_back(port_file);
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, c.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const auto t0 = Clock::now();
  if (posix_spawn(&c.pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) c.pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  if (c.pid <= 0) return false;
  const auto deadline = t0 + timeout;
  while (c.port == 0 && Clock::now() < deadline) {
    std::ifstream in(port_file);
    int p = 0;
    if (in >> p) c.port = static_cast<std::uint16_t>(p);
    if (c.port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  while (c.port != 0 && Clock::now() < deadline) {
    auto r = testing::http_get(c.port, "/readyz");
    if (r && r->status == 200) {
      c.ready_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

using testing::header_of;

}  // namespace tollgate::bench
