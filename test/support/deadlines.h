// Test deadlines scaled to the build: the sanitizers and unoptimized builds run several times
// slower, and CI is a loaded 2-core machine. A deadline is how long a test waits for an event
// that must come; it never delays a passing test.
#pragma once

#include <chrono>

namespace tollgate::testing {

#if defined(__SANITIZE_THREAD__)
inline constexpr int kTimeScale = 10;  // ThreadSanitizer: 5-15x slower
#elif defined(__SANITIZE_ADDRESS__)
inline constexpr int kTimeScale = 4;  // AddressSanitizer + UBSan (Debug): 2-5x slower
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr int kTimeScale = 10;
#elif __has_feature(address_sanitizer)
inline constexpr int kTimeScale = 4;
#elif !defined(NDEBUG)
inline constexpr int kTimeScale = 2;
#else
inline constexpr int kTimeScale = 1;
#endif
#elif !defined(NDEBUG)
inline constexpr int kTimeScale = 2;  // unoptimized
#else
inline constexpr int kTimeScale = 1;
#endif

// `base` (what an idle Release build needs, with a generous margin) scaled to this build.
template <typename Rep, typename Period>
constexpr auto deadline(std::chrono::duration<Rep, Period> base) {
  return base * kTimeScale;
}

}  // namespace tollgate::testing
