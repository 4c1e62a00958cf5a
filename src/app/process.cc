#include "tollgate/app/process.h"

#include <cstdlib>

#include "tollgate/util/file.h"
#include "tollgate/util/log.h"

namespace tollgate::app {

std::string flag_or_env(const std::string& value, const char* var, std::string fallback) {
  if (!value.empty()) return value;
  const char* v = std::getenv(var);  // NOLINT(concurrency-mt-unsafe): before any thread
  return v != nullptr && *v != '\0' ? std::string(v) : std::move(fallback);
}

ShutdownSignals::ShutdownSignals() : main_thread_(pthread_self()) {
  sigemptyset(&set_);
  sigaddset(&set_, SIGINT);
  sigaddset(&set_, SIGTERM);
  sigaddset(&set_, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
}

void ShutdownSignals::wake_on_failure(util::ThreadFailures& failures,
                                      std::function<void()> first) const {
  failures.add_listener([main_thread = main_thread_, first = std::move(first)] {
    if (first) first();
    pthread_kill(main_thread, SIGUSR1);
  });
}

int ShutdownSignals::wait(const util::ThreadFailures& failures) const {
  int sig = 0;
  do {
    sigwait(&set_, &sig);
  } while (sig == SIGUSR1 && !failures.failed());
  if (failures.failed()) {
    util::log_error("shutting down: a thread stopped", {{"cause", failures.cause()}});
  } else {
    util::log_info("shutting down", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  }
  return sig;
}

void write_port_file(const std::string& path, int port) {
  if (path.empty()) return;
  auto written = util::write_file_atomically(path, std::to_string(port) + "\n");
  if (!written.ok()) {
    util::log_warn("cannot write the port file",
                   {{"file", path}, {"error", written.error().message}});
  }
}

}  // namespace tollgate::app
