#include "tollgate/util/time.h"

#include <catch2/catch.hpp>

using namespace tollgate;
using std::chrono::system_clock;

namespace {

long long ms_of(const std::string& s) {
  auto t = util::parse_rfc3339(s);
  REQUIRE(t);
  return std::chrono::duration_cast<std::chrono::milliseconds>(t->time_since_epoch()).count();
}

}  // namespace

TEST_CASE("RFC 3339 times parse to the instant they name") {
  CHECK(ms_of("1970-01-01T00:00:00Z") == 0);
  CHECK(ms_of("2026-12-02T10:00:00.000Z") == 1796205600000);
  CHECK(ms_of("2026-12-02T10:00:00.5Z") == 1796205600500);
  CHECK(ms_of("2026-12-02T10:00:00.123456789Z") == 1796205600123);
  CHECK(ms_of("2026-12-02T12:00:00+02:00") == 1796205600000);
  CHECK(ms_of("2026-12-02t05:30:00-04:30") == ms_of("2026-12-02T10:00:00z"));
  CHECK(ms_of("2024-02-29T00:00:00Z") == 1709164800000);  // a leap day
  CHECK(ms_of("1969-12-31T23:59:59Z") == -1000);
}

TEST_CASE("what rfc3339() writes parses back to the same millisecond") {
  for (long long ms : {0LL, 1LL, 999LL, 1796205600123LL, 4102444799999LL}) {
    const system_clock::time_point t{std::chrono::milliseconds(ms)};
    CHECK(ms_of(util::rfc3339(t)) == ms);
  }
}

TEST_CASE("anything else is not a time") {
  for (const char* s :
       {"", "2026-12-02", "2026-12-02T10:00:00", "2026-12-02 10:00:00Z", "2026-13-02T10:00:00Z",
        "2026-02-30T10:00:00Z", "2023-02-29T00:00:00Z", "2026-12-02T24:00:00Z",
        "2026-12-02T10:60:00Z", "2026-12-02T10:00:60Z", "2026-12-02T10:00:00.Z",
        "2026-12-02T10:00:00ZZ", "2026-12-02T10:00:00+0200", "2026-12-02T10:00:00+24:00",
        "２026-12-02T10:00:00Z", "2026-12-02T10:00:00+02:00x"}) {
    INFO(s);
    CHECK_FALSE(util::parse_rfc3339(s));
  }
}
