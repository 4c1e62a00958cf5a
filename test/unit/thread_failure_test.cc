#include "tollgate/util/thread_failure.h"

#include <catch2/catch.hpp>
#include <stdexcept>
#include <thread>

#include "tollgate/util/log.h"

using tollgate::util::ThreadFailures;

namespace {

struct QuietLogs {
  QuietLogs() { tollgate::util::set_log_level(tollgate::util::LogLevel::kOff); }
  ~QuietLogs() { tollgate::util::set_log_level(tollgate::util::LogLevel::kInfo); }
};

}  // namespace

TEST_CASE("A reported failure is kept with its thread and cause, and the listeners run once") {
  QuietLogs quiet;
  ThreadFailures f;
  int calls = 0;
  f.add_listener([&] { ++calls; });
  CHECK_FALSE(f.failed());
  CHECK(f.cause().empty());
  f.report("index", "boom");
  CHECK(f.failed());
  CHECK(f.cause() == "index: boom");
  CHECK(calls == 1);
  f.report("watcher Pod", "later");  // logged and announced; the first cause is kept
  CHECK(f.cause() == "index: boom");
  CHECK(calls == 2);
}

TEST_CASE("A failure reported on another thread is seen, and its listener runs on that thread") {
  QuietLogs quiet;
  ThreadFailures f;
  std::thread::id listener_thread;
  f.add_listener([&] { listener_thread = std::this_thread::get_id(); });
  std::thread::id reporter;
  std::thread t([&] {
    reporter = std::this_thread::get_id();
    f.report("manifest watch", "poll: bad file descriptor");
  });
  t.join();
  CHECK(f.failed());
  CHECK(listener_thread == reporter);
}

TEST_CASE("run_catching returns what the body threw, and nothing when it returned") {
  CHECK_FALSE(tollgate::util::run_catching([] {}).has_value());
  CHECK(tollgate::util::run_catching([] { throw std::runtime_error("disk on fire"); }) ==
        "disk on fire");
  CHECK(tollgate::util::run_catching([] { throw 42; }) == "an unknown exception");
}

TEST_CASE("An injected failure fires once, at the armed kind's injection point only") {
  using tollgate::util::injection_point;
  CHECK_NOTHROW(injection_point("publisher"));  // nothing armed
  tollgate::util::inject_thread_failure("watcher");
  CHECK_NOTHROW(injection_point("publisher"));
  CHECK_NOTHROW(injection_point("directory"));
  CHECK_THROWS_WITH(injection_point("watcher"), Catch::Contains("injected failure"));
  CHECK_NOTHROW(injection_point("watcher"));  // once
}
