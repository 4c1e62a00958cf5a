// Every case of conformance/cases.json (Istio's real outcomes) through `tollgate eval`.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "support/run.h"

using nlohmann::json;
using tollgate::testing::run_tollgate;

namespace {

json load_cases() {
  return json::parse(
      tollgate::testing::read_file(tollgate::testing::source_path("test/conformance/cases.json")));
}

json input_of(const json& c) {
  json in = {{"policies", c["policies"]}, {"workload", c["workload"]}, {"request", c["request"]}};
  if (c.contains("mesh")) in["mesh"] = c["mesh"];
  return in;
}

}  // namespace

TEST_CASE("every conformance case gets Istio's decision and deciding policy via eval --jsonl") {
  const json cases = load_cases();
  REQUIRE(cases.size() >= 164);
  std::string input;
  for (const auto& c : cases) input += input_of(c).dump() + "\n";
  const auto r = run_tollgate("eval --jsonl", input);
  REQUIRE(r.status == 0);
  std::istringstream lines(r.out);
  std::string line;
  std::size_t i = 0;
  while (std::getline(lines, line)) {
    REQUIRE(i < cases.size());
    const json& c = cases[i++];
    const json d = json::parse(line);
    INFO("case " << c["id"].get<std::string>() << " (" << c["source"].get<std::string>()
                 << "): " << d.dump());
    CHECK(d["decision"] == c["expect"]);
    CHECK(d["policy"] == c["expectPolicy"]);
    CHECK_FALSE(d["reason"].get<std::string>().empty());
  }
  CHECK(i == cases.size());
}

TEST_CASE("eval without --jsonl decides one object, the same as the line mode") {
  const json cases = load_cases();
  for (std::size_t k : {std::size_t{0}, std::size_t{3}, cases.size() - 1}) {
    const json& c = cases[k];
    const auto r = run_tollgate("eval", input_of(c).dump(2));
    REQUIRE(r.status == 0);
    const json d = json::parse(r.out);
    CHECK(d["decision"] == c["expect"]);
    CHECK(d["policy"] == c["expectPolicy"]);
  }
}

TEST_CASE("a bad input line gets an error naming it, the others still decide, exit status 1") {
  const json cases = load_cases();
  std::string input = input_of(cases[0]).dump() + "\n{not json\n" +
                      R"({"workload":{"namespace":"x"},"request":{"port":"http"}})" + "\n" +
                      input_of(cases[1]).dump() + "\n";
  const auto r = run_tollgate("eval --jsonl", input);
  CHECK(r.status == 1);
  std::istringstream lines(r.out);
  std::string l1, l2, l3, l4;
  std::getline(lines, l1);
  std::getline(lines, l2);
  std::getline(lines, l3);
  std::getline(lines, l4);
  CHECK(json::parse(l1)["decision"] == cases[0]["expect"]);
  CHECK_THAT(json::parse(l2)["error"].get<std::string>(), Catch::Contains("line 2"));
  CHECK_THAT(json::parse(l3)["error"].get<std::string>(), Catch::Contains("request.port"));
  CHECK(json::parse(l4)["decision"] == cases[1]["expect"]);
}

TEST_CASE("the --jsonl fast path and the full parser give identical decisions on every case") {
  const json cases = load_cases();
  std::string input;
  for (const auto& c : cases) input += input_of(c).dump() + "\n";
  // Variants the fast path hands over to the full parser: string port, header lists,
  // upper-case protocol, spiffe:// prefix.
  for (const auto& c : cases) {
    json in = input_of(c);
    json& r = in["request"];
    if (r.contains("port")) r["port"] = std::to_string(r["port"].get<int>());
    if (r.contains("protocol")) r["protocol"] = r["protocol"] == "tcp" ? "TCP" : "HTTP";
    if (r.contains("headers")) {
      for (auto& [k, v] : r["headers"].items()) v = json::array({v});
    }
    if (r.contains("source") && r["source"].contains("principal")) {
      r["source"]["principal"] = "spiffe://" + r["source"]["principal"].get<std::string>();
    }
    input += in.dump() + "\n";
  }
  const auto fast = run_tollgate("eval --jsonl", input);
  REQUIRE(fast.status == 0);
  std::istringstream lines(fast.out);
  std::string line;
  std::vector<json> decisions;
  while (std::getline(lines, line)) decisions.push_back(json::parse(line));
  REQUIRE(decisions.size() == 2 * cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    INFO("case " << cases[i]["id"].get<std::string>());
    CHECK(decisions[i] == decisions[i + cases.size()]);
  }
  // And one case in three through single-object mode, which always uses the full parser.
  for (std::size_t i = 0; i < cases.size(); i += 3) {
    INFO("case " << cases[i]["id"].get<std::string>());
    const auto single = run_tollgate("eval", input_of(cases[i]).dump());
    REQUIRE(single.status == 0);
    CHECK(json::parse(single.out) == decisions[i]);
  }
}
