// The pure helpers of the decision service's endpoints (src/server/api.cc).
#include "tollgate/server/api.h"

#include <catch2/catch.hpp>

using tollgate::server::etag_matches;

TEST_CASE("If-None-Match matches the ETag exactly, quotes included") {
  CHECK(etag_matches("\"abc\"", "\"abc\""));
  CHECK_FALSE(etag_matches("\"abd\"", "\"abc\""));
  CHECK_FALSE(etag_matches("abc", "\"abc\""));
  CHECK_FALSE(etag_matches("", "\"abc\""));  // no header: never 304
}

TEST_CASE("If-None-Match compares weakly: W/ on either side is ignored") {
  CHECK(etag_matches("W/\"abc\"", "\"abc\""));
  CHECK(etag_matches("\"abc\"", "W/\"abc\""));
  CHECK_FALSE(etag_matches("W/\"abd\"", "\"abc\""));
}

TEST_CASE("If-None-Match takes a list, with spaces, and * matches anything") {
  CHECK(etag_matches("\"x\", \"abc\"", "\"abc\""));
  CHECK(etag_matches(" \"x\" ,\t\"abc\" ", "\"abc\""));
  CHECK_FALSE(etag_matches("\"x\", \"y\"", "\"abc\""));
  CHECK(etag_matches("*", "\"abc\""));
  CHECK(etag_matches("\"x\", *", "\"abc\""));
}
