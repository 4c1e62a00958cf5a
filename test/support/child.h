// `tollgate` as a child process for tests that need the real binary (signals, exit status,
// restarts): spawned with its stderr in a file (and extra environment variables), its port
// read from a --port-file, its exit awaited, stopped with SIGTERM (or SIGKILL) and reaped when
// the object dies.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/http_get.h"

extern char** environ;

namespace tollgate::testing {

class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { stop(SIGKILL); }

  // Spawns `binary args...` with stderr appended to `log` and `env` ("NAME=value") added to
  // the environment. False if it cannot be spawned.
  bool spawn(const std::string& binary, const std::vector<std::string>& args,
             const std::string& log, const std::vector<std::string>& env = {}) {
    log_ = log;
    std::vector<std::string> all = {binary};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    std::vector<std::string> env_text = env;
    std::vector<char*> envp;  // the added variables first: getenv() finds the first
    for (auto& e : env_text) envp.push_back(e.data());
    for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
    envp.push_back(nullptr);
    if (posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data()) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid_ > 0;
  }

  // Waits for a port number in `file` (written atomically by the child), at most `timeout`.
  static std::uint16_t wait_for_port(const std::string& file, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(file);
      int p = 0;
      if (in >> p && p > 0) return static_cast<std::uint16_t>(p);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return 0;
  }

  // Sends `sig` and reaps the child; its exit status (or 128 + signal), or -1 if none runs.
  int stop(int sig = SIGTERM) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    return wait();
  }
  int wait() {
    if (pid_ <= 0) return -1;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // The exit status if the child has ended, without waiting.
  std::optional<int> exited() {
    if (pid_ <= 0) return -1;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) != pid_) return std::nullopt;
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // The exit status once the child exits within `timeout` (waited for on a pidfd, not
  // polled); nullopt while it runs. Like exited(), it reaps the child.
  std::optional<int> await_exit(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return -1;
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(timeout.count()));
      ::close(pidfd);
    }
    return exited();
  }
  pid_t pid() const { return pid_; }
  std::string log() const {
    std::ifstream in(log_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  pid_t pid_ = -1;
  std::string log_;
};

// Polls `pred` (another process makes it true) until it holds or `timeout` passes.
template <typename Pred>
bool eventually(Pred pred, std::chrono::seconds timeout = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace tollgate::testing
