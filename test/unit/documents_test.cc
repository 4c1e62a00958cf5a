#include <catch2/catch.hpp>

#include "tollgate/policy/parse.h"

using namespace tollgate::policy;

TEST_CASE("YAML multi-document files and kind: List are flattened") {
  auto docs = parse_documents(R"(
kind: A
---
---
apiVersion: v1
kind: List
items:
- {kind: B}
- {kind: C}
)",
                              "f.yaml");
  REQUIRE(docs.ok());
  REQUIRE(docs->size() == 3);
  CHECK((*docs)[0].object["kind"] == "A");
  CHECK((*docs)[1].object["kind"] == "B");
  CHECK((*docs)[2].object["kind"] == "C");
  CHECK((*docs)[1].origin == "f.yaml#3.items[0]");
}

TEST_CASE("YAML scalars are typed as Kubernetes' decoder types them") {
  auto j =
      yaml_to_json("a: 80\nb: \"80\"\nc: true\nd: ~\ne: 1.5\nf: abc\ng: '007'\nh: 0x1G\n", "t");
  REQUIRE(j.ok());
  CHECK((*j)["a"] == 80);
  CHECK((*j)["b"] == "80");
  CHECK((*j)["c"] == true);
  CHECK((*j)["d"].is_null());
  CHECK((*j)["e"] == 1.5);
  CHECK((*j)["f"] == "abc");
  CHECK((*j)["g"] == "007");
  CHECK((*j)["h"] == "0x1G");
}

TEST_CASE("JSON input, single or a list, is read as documents") {
  auto one = parse_documents(R"({"kind":"A"})", "a.json");
  REQUIRE(one.ok());
  CHECK(one->size() == 1);
  auto arr = parse_documents(R"([{"kind":"A"},{"kind":"B"}])", "b.json");
  REQUIRE(arr.ok());
  CHECK(arr->size() == 2);
}

TEST_CASE("malformed documents give errors with file, line and column") {
  auto bad = parse_documents("a: [1, 2\nb: c\n", "bad.yaml");
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(bad.error().message, Catch::StartsWith("bad.yaml:"));
  auto dup = parse_documents("a: 1\na: 2\n", "dup.yaml");
  REQUIRE_FALSE(dup.ok());
  CHECK_THAT(dup.error().message, Catch::Contains("duplicate key"));
  auto scalar = parse_documents("just text\n", "s.yaml");
  REQUIRE_FALSE(scalar.ok());
  CHECK_THAT(scalar.error().message, Catch::Contains("mapping"));
  auto json_bad = parse_documents("{\"a\": [1,}", "j.json");
  REQUIRE_FALSE(json_bad.ok());
  CHECK_THAT(json_bad.error().message, Catch::StartsWith("j.json"));
}

TEST_CASE("alias bombs and deep nesting are refused, not expanded") {
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  char prev = 'a';
  for (char c = 'b'; c <= 'j'; ++c) {
    bomb += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) bomb += std::string(i ? ", *" : "*") + prev;
    bomb += "]\n";
    prev = c;
  }
  auto r = parse_documents(bomb, "bomb.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("too many nodes"));
  std::string deep(300, '[');
  deep += std::string(300, ']');
  auto d = yaml_to_json("a: " + deep, "deep.yaml");
  CHECK_FALSE(d.ok());
}

TEST_CASE("mesh settings and workloads are parsed strictly") {
  auto m = parse_mesh(nlohmann::json::parse(
      R"({"rootNamespace":"istio-config","trustDomain":"td","trustDomainAliases":["old"],
          "extensionProviders":[{"name":"x","type":"grpc"}],"pathNormalization":"NONE",
          "enableMultipleCustomAuthzProviders":true})"));
  REQUIRE(m.ok());
  CHECK(m->root_namespace == "istio-config");
  CHECK(m->trust_domain_aliases == std::vector<std::string>{"old"});
  CHECK(m->path_normalization == PathNormalization::kNone);
  CHECK(m->enable_multiple_custom_providers);
  CHECK_FALSE(parse_mesh(nlohmann::json::parse(R"({"trustDomian":"x"})")).ok());
  CHECK_FALSE(parse_mesh(nlohmann::json::parse(R"({"pathNormalization":"X"})")).ok());
  auto w = parse_workload(nlohmann::json::parse(
      R"({"namespace":"ns","labels":{"app":"a"},"serviceAccount":"sa","pod":"p-1"})"));
  REQUIRE(w.ok());
  CHECK(w->name == "p-1");
  CHECK(parse_workload(nlohmann::json::parse(R"({"labels":{}})")).error().message ==
        "workload.namespace: is required");
  CHECK_FALSE(parse_workload(nlohmann::json::parse(R"({"namespace":"n","labels":{"a":1}})")).ok());
}

TEST_CASE("YAML with invalid UTF-8 is refused with its position") {
  auto r = parse_documents("a: \"x\xff\"\n", "u.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("UTF-8"));
  auto ok = parse_documents("a: \"h\xc3\xa9llo \xf0\x9f\x98\x80\"\n", "u.yaml");
  REQUIRE(ok.ok());
  CHECK((*ok)[0].object["a"] == "h\xc3\xa9llo \xf0\x9f\x98\x80");
}

TEST_CASE("aliases of a large scalar cannot amplify a small file into a huge document") {
  std::string yaml = "big: &b " + std::string(4000, 'x') + "\nlist: [";
  for (int i = 0; i < 3000; ++i) yaml += i ? ", *b" : "*b";
  yaml += "]\n";
  auto r = parse_documents(yaml, "amp.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("too many bytes"));
}

TEST_CASE("inputs that made yaml-cpp 0.7 loop forever are plain errors") {
  for (const char* text : {"{}, c", "{a: b}, \"c\"", "[], c", "- {}, c\n"}) {
    INFO(text);
    auto r = parse_documents(text, "hang.yaml");
    if (!r.ok()) CHECK_THAT(r.error().message, Catch::StartsWith("hang.yaml"));
  }
  auto yaml = parse_documents("a: {x: 1}\nb: [1, {y: 2}]\n", "flow.yaml");
  REQUIRE(yaml.ok());
  CHECK((*yaml)[0].object["b"][1]["y"] == 2);
}
