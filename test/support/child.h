// A `tollgate` child process for tests: started with arguments and extra environment
// variables, its stderr kept in a file; its port file and its exit are awaited with deadlines;
// killed and reaped if still running when the object dies.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/run.h"

namespace tollgate::testing {

class Child {
 public:
  // Runs TOLLGATE_BINARY with `args`; `env` holds "NAME=value" entries added to the
  // environment.
  explicit Child(const std::vector<std::string>& args, const std::vector<std::string>& env = {})
      : log_(dir_.path() / "stderr") {
    std::vector<std::string> argv_text = {TOLLGATE_BINARY};
    argv_text.insert(argv_text.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_text) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_text = env;
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 2);
      for (auto& e : env_text) ::putenv(e.data());
      ::execv(TOLLGATE_BINARY, argv.data());
      ::_exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  std::string log() const { return read_file(log_); }
  const std::filesystem::path& dir() const { return dir_.path(); }

  // The port the child wrote to `port_file` (--port-file), or 0 if it did not within `timeout`
  // or exited first. The file is another process's: it is polled.
  std::uint16_t await_port(const std::filesystem::path& port_file,
                           std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline && !exited()) {
      const auto text = read_file(port_file);
      if (!text.empty()) return static_cast<std::uint16_t>(std::stoi(text));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return 0;
  }

  // The child's exit status once it exits within `timeout` (128 + N for signal N); nullopt if
  // it is still running.
  std::optional<int> await_exit(std::chrono::milliseconds timeout) {
    if (status_) return status_;
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(timeout.count()));
      ::close(pidfd);
    }
    exited();  // without pidfd_open: one look
    return status_;
  }

 private:
  bool exited() {
    if (status_) return true;
    int raw = 0;
    if (::waitpid(pid_, &raw, WNOHANG) != pid_) return false;
    status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
    return true;
  }

  TempDir dir_;
  std::filesystem::path log_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

}  // namespace tollgate::testing
