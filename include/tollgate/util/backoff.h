// Backoff: client-go's reflector backoff, exponential from 0.8 s to a 30 s cap with jitter,
// reset after a success. Not thread-safe: one per watcher.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>

namespace tollgate::util {

class Backoff {
 public:
  using Duration = std::chrono::duration<double>;
  explicit Backoff(Duration initial = Duration(0.8), Duration cap = Duration(30.0),
                   double jitter = 1.0, std::uint64_t seed = std::random_device{}())
      : initial_(initial), cap_(cap), jitter_(jitter), next_(initial), rng_(seed) {}

  // The delay before the next attempt: the current step plus up to `jitter` times it,
  // capped. Each call doubles the step.
  Duration next() {
    std::uniform_real_distribution<double> u(0.0, jitter_);
    const Duration d = std::min(cap_, next_ * (1.0 + u(rng_)));
    next_ = std::min(cap_, next_ * 2.0);
    return d;
  }
  void reset() { next_ = initial_; }

 private:
  Duration initial_, cap_;
  double jitter_;
  Duration next_;
  std::mt19937_64 rng_;
};

}  // namespace tollgate::util
