// What `tollgate run` and `tollgate agent` share as processes: signals taken by one sigwait on
// the main thread (never a handler on a random thread), a thread failure that wakes it, the
// shutdown log line, and the port file tests and scripts read.
#pragma once

#include <pthread.h>

#include <csignal>
#include <functional>
#include <string>

#include "tollgate/util/thread_failure.h"

namespace tollgate::app {

class ShutdownSignals {
 public:
  // Blocks SIGINT, SIGTERM and SIGUSR1 in the calling thread, and so in every thread it
  // starts afterwards: construct it on the main thread before any other thread starts.
  ShutdownSignals();

  // Makes a failure reported to `failures` wake wait(): `first` runs (on the dying thread),
  // then SIGUSR1 goes to the thread that constructed this.
  void wake_on_failure(util::ThreadFailures& failures, std::function<void()> first = {}) const;

  // Until SIGINT or SIGTERM, or until `failures` has a failure (a SIGUSR1 from outside is
  // ignored). Logs why the process is stopping and returns the signal.
  int wait(const util::ThreadFailures& failures) const;

 private:
  sigset_t set_{};
  pthread_t main_thread_;
};

// A flag's value when given, else the environment variable `var` (the downward API's
// POD_NAME, POD_NAMESPACE) when set and not empty, else `fallback`. Call before threads start.
std::string flag_or_env(const std::string& value, const char* var, std::string fallback = {});

// Writes "<port>\n" to `path` atomically (readers never see a partial file); a failure is
// logged, not fatal. Nothing when `path` is empty.
void write_port_file(const std::string& path, int port);

}  // namespace tollgate::app
