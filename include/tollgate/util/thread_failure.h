// The fate of the controller's long-lived threads (the index thread, each watcher, the
// manifest watch). A thread that ends unexpectedly (an exception, or a return nobody asked
// for) is reported here with its cause: logged as an error, remembered (/readyz answers 503
// naming it) and announced to the listeners (`tollgate run` wakes its main thread, drains and
// exits 1 so that Kubernetes restarts it). Thread-safe; listeners are added before the
// threads start and run on the dying thread.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::util {

class ThreadFailures {
 public:
  using Listener = std::function<void()>;

  void add_listener(Listener l);
  // Records that `thread` ended because of `cause`, logs it and runs the listeners. Every
  // failure is logged; the first one is kept as cause().
  void report(std::string_view thread, std::string_view cause);
  bool failed() const { return failed_.load(); }
  // "<thread>: <cause>" of the first failure; empty while none.
  std::string cause() const;

 private:
  mutable std::mutex mu_;
  std::vector<Listener> listeners_;
  std::string cause_;
  std::atomic<bool> failed_{false};
};

// Logs a thread's failure, and reports it to `failures` when there is one.
void report_thread_failure(ThreadFailures* failures, std::string_view thread,
                           std::string_view cause);

// Runs `body` (a thread's whole work) and returns what it threw, as text; nullopt when it
// returned.
std::optional<std::string> run_catching(const std::function<void()>& body);

// Test-only failure injection, compiled in always. A thread kind ("publisher", "watcher",
// "directory") is armed by TOLLGATE_TEST_FAIL_THREAD=<kind> in the environment (read once, at
// the first injection point reached) or by inject_thread_failure(kind); the next
// injection_point(kind) any thread reaches then throws, once. Unarmed, an injection point is
// one relaxed atomic load.
void inject_thread_failure(std::string_view kind);
void injection_point(std::string_view kind);

}  // namespace tollgate::util
