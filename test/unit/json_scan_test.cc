#include "tollgate/policy/json_scan.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "support/run.h"

namespace tollgate {
namespace {

namespace js = policy::json_scan;

// The scanner accepts exactly what a full JSON parser accepts (one value, whitespace around).
bool scanner_accepts(std::string_view text) {
  auto end = js::value_end(text, 0);
  return end.ok() && text.find_first_not_of(" \t\r\n", *end) == std::string_view::npos;
}

TEST_CASE("The scanner accepts and rejects what a JSON parser does") {
  const std::vector<std::string> cases = {"{}",
                                          "[]",
                                          "null",
                                          "true",
                                          "false",
                                          "0",
                                          "-0",
                                          "1.5e10",
                                          "-1E-2",
                                          "\"\"",
                                          R"({"a":[1,{"b":null}],"c":"\u00e9\n"})",
                                          " { \"a\" : 1 } ",
                                          "[[[[[]]]]]",
                                          R"("\ud83d\ude00")",
                                          "01",
                                          "1.",
                                          ".5",
                                          "-",
                                          "+1",
                                          "1e",
                                          "[1,]",
                                          "{\"a\":1,}",
                                          "{a:1}",
                                          "{\"a\" 1}",
                                          "[1 2]",
                                          "\"\\x\"",
                                          "\"\\u12g4\"",
                                          "\"a\nb\"",
                                          "tru",
                                          "nul",
                                          "[",
                                          "]",
                                          "{",
                                          "\"abc",
                                          "{\"a\":}",
                                          "[1]]",
                                          "{} {}",
                                          "",
                                          "   ",
                                          "[\"a\",\"b\"",
                                          "{\"k\":[1,2,{\"x\":tru}]}"};
  for (const auto& c : cases) {
    INFO(c);
    CHECK(scanner_accepts(c) == nlohmann::json::accept(c));
  }
}

TEST_CASE("The scanner agrees with a JSON parser on the fuzz corpus") {
  const auto dir = testing::source_path("test/fuzz/corpus/policy");
  int compared = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string text = testing::read_file(e.path());
    // nlohmann also checks UTF-8, which the reader checks separately.
    if (!nlohmann::json::accept(text) && scanner_accepts(text)) {
      bool utf8_problem = false;
      try {
        const auto parsed = nlohmann::json::parse(text);
        (void)parsed;
      } catch (const nlohmann::json::parse_error& err) {
        utf8_problem = std::string(err.what()).find("UTF-8") != std::string::npos ||
                       std::string(err.what()).find("surrogate") != std::string::npos;
      }
      INFO(e.path().string());
      CHECK(utf8_problem);
      continue;
    }
    INFO(e.path().string());
    CHECK(scanner_accepts(text) == nlohmann::json::accept(text));
    ++compared;
  }
  CHECK(compared > 100);
}

TEST_CASE("Members and elements are handed over as views, keys unescaped") {
  const std::string text =
      R"( {"k\u0069nd" : "List", "items": [ {"a":1} , [2], "x" ], "n": null} )";
  std::vector<std::pair<std::string, std::string>> members;
  auto r = js::for_each_member(text, [&](std::string_view k, std::string_view v) {
    members.emplace_back(k, v);
    return util::ok();
  });
  REQUIRE(r.ok());
  REQUIRE(members.size() == 3);
  CHECK(members[0] == std::pair<std::string, std::string>{"kind", "\"List\""});
  CHECK(members[2] == std::pair<std::string, std::string>{"n", "null"});
  std::vector<std::string> elements;
  r = js::for_each_element(members[1].second, [&](std::string_view v) {
    elements.emplace_back(v);
    return util::ok();
  });
  REQUIRE(r.ok());
  CHECK(elements == std::vector<std::string>{"{\"a\":1}", "[2]", "\"x\""});
}

TEST_CASE("A callback's error stops the scan and is returned") {
  int seen = 0;
  auto r = js::for_each_element("[1,2,3]", [&](std::string_view) -> util::Status {
    if (++seen == 2) return util::make_error("stop here");
    return util::ok();
  });
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "stop here");
  CHECK(seen == 2);
}

TEST_CASE("Errors say where: line and column") {
  auto r = js::value_end("{\n  \"a\": [1,\n  ]\n}", 0);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::StartsWith("line 3, column 3"));
}

TEST_CASE("String tokens unescape like JSON strings") {
  CHECK(*js::string_value(R"("a\"b\\c\/d\n")") == "a\"b\\c/d\n");
  CHECK(*js::string_value(R"("caf\u00e9")") == "caf\xc3\xa9");
  CHECK(*js::string_value(R"("\ud83d\ude00")") == "\xf0\x9f\x98\x80");
  CHECK_FALSE(js::string_value("12").ok());
}

TEST_CASE("Nesting deeper than the limit is an error, not a crash") {
  const std::string deep =
      std::string(js::kMaxDepth + 1, '[') + std::string(js::kMaxDepth + 1, ']');
  CHECK_FALSE(js::value_end(deep, 0).ok());
  const std::string ok = std::string(js::kMaxDepth, '[') + std::string(js::kMaxDepth, ']');
  CHECK(js::value_end(ok, 0).ok());
}

}  // namespace
}  // namespace tollgate

namespace tollgate {
namespace {

std::vector<std::string> members_of(std::string_view text, bool validated) {
  std::vector<std::string> out;
  auto r = policy::json_scan::for_each_member(
      text,
      [&](std::string_view k, std::string_view v) {
        out.push_back(std::string(k) + "=" + std::string(v));
        return util::ok();
      },
      validated);
  if (!r.ok()) out.push_back("error: " + r.error().message);
  return out;
}

TEST_CASE("Scanning text known to be valid finds the same members, escapes and all") {
  for (const std::string text :
       {R"({"a":"x\"y","b\\":"\\","c":[1,"]",{"d":"}"}],"e":-1.5e3,"f":null,"g":{}})",
        R"( { "k" : "\\\"" , "l" : [ ] } )", R"({"s":"\\\\","t":true})", "{}"}) {
    INFO(text);
    REQUIRE(policy::json_scan::value_end(text, 0).ok());
    CHECK(members_of(text, true) == members_of(text, false));
  }
}

}  // namespace
}  // namespace tollgate
