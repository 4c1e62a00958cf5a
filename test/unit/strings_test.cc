#include "tollgate/util/strings.h"

#include <catch2/catch.hpp>

using namespace tollgate::util;

TEST_CASE("case conversion touches ASCII letters only") {
  std::string s = "Hello-WORLD_09\xc3\x89";
  to_lower(s);
  CHECK(s == "hello-world_09\xc3\x89");
  to_upper(s);
  CHECK(s == "HELLO-WORLD_09\xc3\x89");
  CHECK(lowered("X-Forwarded-For") == "x-forwarded-for");
  CHECK(lowered("") == "");
}

TEST_CASE("trim drops spaces, tabs and line ends at both ends only") {
  CHECK(trim("  a b \t\r\n") == "a b");
  CHECK(trim("\n") == "");
  CHECK(trim("") == "");
  CHECK(trim("x") == "x");
}

TEST_CASE("split keeps empty parts, so part counts are exact") {
  CHECK(split("a//b", '/') == std::vector<std::string_view>{"a", "", "b"});
  CHECK(split("", '/') == std::vector<std::string_view>{""});
  CHECK(split("/", '/') == std::vector<std::string_view>{"", ""});
  CHECK(split("td/ns/x/sa/y", '/').size() == 5);
}

TEST_CASE("hex digits in either case, anything else is -1") {
  CHECK(hex_digit('0') == 0);
  CHECK(hex_digit('9') == 9);
  CHECK(hex_digit('a') == 10);
  CHECK(hex_digit('F') == 15);
  CHECK(hex_digit('g') == -1);
  CHECK(hex_digit('%') == -1);
}

TEST_CASE("percent_decode decodes escapes in either case and refuses a broken one") {
  CHECK(percent_decode("a%2Fb%2fc", false) == "a/b/c");
  CHECK(percent_decode("%41%", false) == std::nullopt);  // a '%' at the end
  CHECK(percent_decode("%4", false) == std::nullopt);
  CHECK(percent_decode("%zz", false) == std::nullopt);
  CHECK(percent_decode("", false) == "");
  CHECK(percent_decode("%00", false) == std::string(1, '\0'));
}

TEST_CASE("percent_decode reads '+' as a space only in form encoding") {
  CHECK(percent_decode("a+b%2B", true) == "a b+");
  CHECK(percent_decode("a+b", false) == "a+b");
}
