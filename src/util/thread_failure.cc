#include "tollgate/util/thread_failure.h"

#include <cstdlib>
#include <exception>
#include <stdexcept>

#include "tollgate/util/log.h"

namespace tollgate::util {

void ThreadFailures::add_listener(Listener l) {
  std::lock_guard lock(mu_);
  listeners_.push_back(std::move(l));
}

void ThreadFailures::report(std::string_view thread, std::string_view cause) {
  log_error("a thread stopped unexpectedly; shutting down", {{"thread", thread}, {"error", cause}});
  std::vector<Listener> listeners;
  {
    std::lock_guard lock(mu_);
    if (cause_.empty()) cause_ = std::string(thread) + ": " + std::string(cause);
    failed_ = true;
    listeners = listeners_;
  }
  for (const auto& l : listeners) l();
}

std::string ThreadFailures::cause() const {
  std::lock_guard lock(mu_);
  return cause_;
}

void report_thread_failure(ThreadFailures* failures, std::string_view thread,
                           std::string_view cause) {
  if (failures != nullptr) {
    failures->report(thread, cause);
  } else {
    log_error("a thread stopped unexpectedly", {{"thread", thread}, {"error", cause}});
  }
}

std::optional<std::string> run_catching(const std::function<void()>& body) {
  try {
    body();
    return std::nullopt;
  } catch (const std::exception& e) {
    return std::string(e.what());
  } catch (...) {
    return std::string("an unknown exception");
  }
}

namespace {

std::mutex g_inject_mu;
std::string g_armed;  // guarded by g_inject_mu

// Whether any kind is armed; reads the environment once, at the first use.
std::atomic<bool>& any_armed() {
  static std::atomic<bool> armed = [] {
    const char* env = std::getenv("TOLLGATE_TEST_FAIL_THREAD");
    if (env == nullptr || *env == '\0') return false;
    std::lock_guard lock(g_inject_mu);
    g_armed = env;
    return true;
  }();
  return armed;
}

}  // namespace

void inject_thread_failure(std::string_view kind) {
  auto& armed = any_armed();
  std::lock_guard lock(g_inject_mu);
  g_armed = std::string(kind);
  armed = true;
}

void injection_point(std::string_view kind) {
  auto& armed = any_armed();
  if (!armed.load(std::memory_order_relaxed)) return;
  {
    std::lock_guard lock(g_inject_mu);
    if (g_armed != kind) return;
    g_armed.clear();
    armed = false;
  }
  throw std::runtime_error("injected failure (TOLLGATE_TEST_FAIL_THREAD=" + std::string(kind) +
                           ")");
}

}  // namespace tollgate::util
