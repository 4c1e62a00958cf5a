#include "tollgate/compile/table.h"

#include <catch2/catch.hpp>

using namespace tollgate::compile;

TEST_CASE("the flat hash set finds exactly its keys, including empty and binary keys") {
  std::vector<std::string> keys;
  for (int i = 0; i < 10000; ++i)
    keys.push_back("cluster.local/ns/n" + std::to_string(i) + "/sa/s");
  keys.emplace_back("");
  keys.emplace_back(std::string("\0\x01", 2));
  FlatStringSet s;
  s.build(keys);
  for (const auto& k : keys) CHECK(s.contains(k));
  CHECK_FALSE(s.contains("cluster.local/ns/n10000/sa/s"));
  CHECK_FALSE(s.contains(std::string("\0", 1)));
  FlatStringSet empty;
  empty.build({});
  CHECK_FALSE(empty.contains(""));
}

TEST_CASE("path templates match the examples of Istio's integration test") {
  auto t = PathTemplate::parse("/allow/admin/{**}");
  CHECK(t.matches("/allow/admin/"));
  CHECK(t.matches("/allow/admin/foo/temp.txt"));
  CHECK_FALSE(t.matches("/allow/admin"));
  auto two = PathTemplate::parse("/foo/{*}/bar/{**}");
  CHECK(two.matches("/foo/buzz/bar/bat"));
  CHECK_FALSE(two.matches("/foo//bar/x"));
  CHECK_FALSE(two.matches("/foo/a/b/bar/x"));
  auto mid = PathTemplate::parse("/store/{**}/cart");
  CHECK(mid.matches("/store//cart"));
  CHECK(mid.matches("/store/a/b/cart"));
  CHECK_FALSE(mid.matches("/store/cart"));
  auto seg = PathTemplate::parse("/a/{*}");
  CHECK(seg.matches("/a/x=1"));  // '=' is a segment character
  CHECK_FALSE(seg.matches("/a/x/y"));
}

TEST_CASE("globs implement the regex subset Istio generates") {
  Glob g;
  g.tokens = {{Glob::Token::kAnyRun, ""},
              {Glob::Token::kLiteral, "/ns/"},
              {Glob::Token::kAnyRun, ""},
              {Glob::Token::kLiteral, "-prod/"},
              {Glob::Token::kAnyRun, ""}};
  CHECK(g.matches("spiffe://td/ns/shop-prod/sa/x"));
  CHECK_FALSE(g.matches("spiffe://td/ns/shop-dev/sa/x"));
  Glob td;
  td.tokens = {{Glob::Token::kAnyRunNoSlash, ""},
               {Glob::Token::kLiteral, ".example.org/"},
               {Glob::Token::kAnyRun, ""}};
  CHECK(td.matches("a.example.org/ns/x/sa/y"));
  CHECK_FALSE(td.matches("a/b.example.org/ns/x"));
}

TEST_CASE("hash_bytes is stable and seed-dependent") {
  // Pinned: ETags are content hashes, and two replicas (or two releases) must agree on them.
  CHECK(hash_bytes("abc") == 996580060897260808ULL);
  CHECK(hash_bytes("") == 17665956581633026203ULL);
  CHECK(hash_bytes("abc") != hash_bytes("abd"));
  CHECK(hash_bytes("abc", 1) != hash_bytes("abc", 2));
}
