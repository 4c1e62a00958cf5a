// The real kubectl against the fake API server: a kubeconfig for the server, and kubectl run as
// a child process (posix_spawn, no shell) with its stdin, stdout and stderr on pipes and a
// timeout that kills it. Header-only. Tests SKIP (return early with a WARN) when
// kubectl_available() is false; CI installs kubectl.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test/support/fake_apiserver.h"
#include "tollgate/util/base64.h"

extern char** environ;

namespace tollgate::testing {

inline constexpr const char* kKubectlPath = "/usr/bin/kubectl";

inline bool kubectl_available() { return ::access(kKubectlPath, X_OK) == 0; }

// Writes `dir`/kubeconfig (JSON, which kubectl reads as YAML) for `server`: its URL, its CA
// as certificate-authority-data when it serves TLS, and `token` as the user's bearer token
// when not empty; context "fake", namespace "default". Returns the file's path.
inline std::string write_kubeconfig(const FakeApiServer& server, const std::string& dir,
                                    const std::string& token = "") {
  nlohmann::json cluster = {{"server", server.url()}};
  if (!server.ca_pem().empty()) {
    cluster["certificate-authority-data"] = util::encode_base64(server.ca_pem());
  }
  nlohmann::json user = nlohmann::json::object();
  if (!token.empty()) user["token"] = token;
  const nlohmann::json config = {
      {"apiVersion", "v1"},
      {"kind", "Config"},
      {"clusters", {{{"name", "fake"}, {"cluster", cluster}}}},
      {"users", {{{"name", "fake"}, {"user", user}}}},
      {"contexts",
       {{{"name", "fake"},
         {"context", {{"cluster", "fake"}, {"user", "fake"}, {"namespace", "default"}}}}}},
      {"current-context", "fake"}};
  const std::string path = dir + "/kubeconfig";
  std::ofstream(path, std::ios::trunc) << config.dump(2) << "\n";
  ::chmod(path.c_str(), 0600);
  return path;
}

struct KubectlResult {
  int exit_code = -1;  // 128 + signal when killed; -1 when it could not run or timed out
  std::string out, err;
};

// Runs `kubectl --kubeconfig=<kubeconfig> --cache-dir=<its dir>/kubectl-cache <args...>` with
// `stdin_text` on its standard input, HOME set to the kubeconfig's directory (nothing is
// written to the real home) and KUBECONFIG unset. After `timeout` it is killed (exit_code -1,
// and err says so).
inline KubectlResult kubectl(const std::string& kubeconfig, const std::vector<std::string>& args,
                             const std::string& stdin_text = "",
                             std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  KubectlResult result;
  const std::string dir = kubeconfig.substr(0, kubeconfig.find_last_of('/'));
  std::vector<std::string> argv_text = {kKubectlPath, "--kubeconfig=" + kubeconfig,
                                        "--cache-dir=" + dir + "/kubectl-cache"};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_text = {"HOME=" + dir};
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view v(*e);
    if (v.starts_with("HOME=") || v.starts_with("KUBECONFIG=")) continue;
    env_text.emplace_back(v);
  }
  std::vector<char*> envp;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);

  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    result.err = "pipe: " + std::string(std::strerror(errno));
    for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) {
      if (fd >= 0) ::close(fd);
    }
    return result;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  // The child starts with no signal blocked and SIGPIPE at its default.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, pipe_only;
  sigemptyset(&none);
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &pipe_only);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, kKubectlPath, &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  if (spawned != 0) {
    ::close(in[1]);
    ::close(out[0]);
    ::close(err[0]);
    result.err = "posix_spawn " + std::string(kKubectlPath) + ": " + std::strerror(spawned);
    return result;
  }

  // Writing to a kubectl that has exited must not kill the test with SIGPIPE: the signal is
  // blocked on this thread while it feeds stdin, and a pending one is consumed after.
  sigset_t old_mask;
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old_mask);
  int stdin_fd = in[1];
  std::size_t written = 0;
  if (stdin_text.empty()) {
    ::close(stdin_fd);
    stdin_fd = -1;
  } else {
    ::fcntl(stdin_fd, F_SETFL, O_NONBLOCK);
  }
  int fds[2] = {out[0], err[0]};
  std::string* sinks[2] = {&result.out, &result.err};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  while (fds[0] >= 0 || fds[1] >= 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p[3];
    nfds_t n = 0;
    for (int fd : fds) p[n++] = {fd, POLLIN, 0};  // a negative fd is ignored by poll
    if (stdin_fd >= 0) p[n++] = {stdin_fd, POLLOUT, 0};
    if (::poll(p, n, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i] < 0 || (p[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buf[65536];
      const ssize_t got = ::read(fds[i], buf, sizeof buf);
      if (got > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        ::close(fds[i]);
        fds[i] = -1;
      }
    }
    if (stdin_fd >= 0 && (p[2].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
      const ssize_t put =
          ::write(stdin_fd, stdin_text.data() + written, stdin_text.size() - written);
      if (put > 0) written += static_cast<std::size_t>(put);
      if ((put < 0 && errno != EAGAIN && errno != EINTR) || written == stdin_text.size()) {
        ::close(stdin_fd);
        stdin_fd = -1;
      }
    }
  }
  if (stdin_fd >= 0) ::close(stdin_fd);
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
  const timespec zero{0, 0};
  while (sigtimedwait(&pipe_only, nullptr, &zero) == SIGPIPE) {
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);

  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    result.err += "\n[kubectl killed after " + std::to_string(timeout.count()) + " ms]";
    return result;
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

}  // namespace tollgate::testing
