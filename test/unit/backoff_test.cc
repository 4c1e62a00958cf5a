#include "tollgate/util/backoff.h"

#include <catch2/catch.hpp>

using tollgate::util::Backoff;

TEST_CASE("backoff doubles from its first step to the cap, with jitter up to one step") {
  Backoff b(Backoff::Duration(0.8), Backoff::Duration(30.0), 1.0, 42);
  double step = 0.8;
  for (int i = 0; i < 12; ++i) {
    const double d = b.next().count();
    INFO("attempt " << i << ": " << d << " s, step " << step);
    CHECK(d >= std::min(step, 30.0));
    CHECK(d <= std::min(step * 2.0, 30.0));
    step *= 2.0;
  }
  CHECK(b.next().count() == 30.0);  // capped: step and jitter both end at the cap
}

TEST_CASE("backoff without jitter is exact, and reset starts over") {
  Backoff b(Backoff::Duration(1.0), Backoff::Duration(5.0), 0.0, 1);
  CHECK(b.next().count() == 1.0);
  CHECK(b.next().count() == 2.0);
  CHECK(b.next().count() == 4.0);
  CHECK(b.next().count() == 5.0);
  CHECK(b.next().count() == 5.0);
  b.reset();
  CHECK(b.next().count() == 1.0);
}

TEST_CASE("two backoffs with different seeds spread their retries") {
  Backoff a(Backoff::Duration(1.0), Backoff::Duration(30.0), 1.0, 1);
  Backoff b(Backoff::Duration(1.0), Backoff::Duration(30.0), 1.0, 2);
  int differ = 0;
  for (int i = 0; i < 4; ++i) differ += a.next() != b.next();
  CHECK(differ > 0);
}
