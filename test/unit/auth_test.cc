// Who may read which table (src/auth/identity.cc) and the bounded verdict cache.
#include <catch2/catch.hpp>

#include "tollgate/auth/identity.h"
#include "tollgate/util/ttl_cache.h"

using namespace tollgate;
using nlohmann::json;

namespace {

json review(bool authenticated, const std::string& username, json extra = json::object(),
            json audiences = json::array({"tollgate"})) {
  return {{"apiVersion", "authentication.k8s.io/v1"},
          {"kind", "TokenReview"},
          {"status",
           {{"authenticated", authenticated},
            {"audiences", audiences},
            {"user",
             {{"username", username},
              {"uid", "u-1"},
              {"groups", {"system:serviceaccounts", "system:authenticated"}},
              {"extra", extra}}}}}};
}

const auth::PodRef kWeb{"shop", "web-1", "uid-web-1", "web"};

}  // namespace

TEST_CASE("a pod-bound service-account token is that pod, that incarnation") {
  const auto id = auth::identity_from_token_review(
      review(true, "system:serviceaccount:shop:web",
             {{"authentication.kubernetes.io/pod-name", {"web-1"}},
              {"authentication.kubernetes.io/pod-uid", {"uid-web-1"}}}),
      auth::kAudience);
  REQUIRE(id.ok());
  CHECK(id->sa_namespace == "shop");
  CHECK(id->sa_name == "web");
  CHECK(id->pod_name == "web-1");
  CHECK(id->pod_uid == "uid-web-1");
  CHECK(id->groups.size() == 2);
  CHECK(auth::may_read_table(*id, kWeb).ok());
  // Another pod of the same account, and the same name recreated with a new uid: no.
  const auto other = auth::may_read_table(*id, {"shop", "web-2", "uid-web-2", "web"});
  REQUIRE_FALSE(other.ok());
  CHECK(other.error().message.find("web-2") == std::string::npos);  // names no other pod
  CHECK_FALSE(auth::may_read_table(*id, {"shop", "web-1", "uid-new", "web"}).ok());
  CHECK_FALSE(auth::may_read_table(*id, {"other", "web-1", "uid-web-1", "web"}).ok());
}

TEST_CASE("a service-account token not bound to a pod reads the pods that run as it") {
  const auto id =
      auth::identity_from_token_review(review(true, "system:serviceaccount:shop:web"), "tollgate");
  REQUIRE(id.ok());
  CHECK(id->pod_name.empty());
  CHECK(auth::may_read_table(*id, kWeb).ok());
  CHECK(auth::may_read_table(*id, {"shop", "web-9", "x", "web"}).ok());
  const auto db = auth::may_read_table(*id, {"shop", "db-0", "x", "db"});
  REQUIRE_FALSE(db.ok());
  CHECK(db.error().message.find("db-0") == std::string::npos);
  CHECK_FALSE(auth::may_read_table(*id, {"other", "web-1", "x", "web"}).ok());
}

TEST_CASE("anything but an authenticated service account for our audience is refused") {
  auto fails = [](const json& r, const std::string& why) {
    const auto id = auth::identity_from_token_review(r, "tollgate");
    REQUIRE_FALSE(id.ok());
    CHECK_THAT(id.error().message, Catch::Contains(why));
  };
  json unauth = review(false, "");
  unauth["status"]["error"] = "token has expired";
  fails(unauth, "not valid: token has expired");
  fails(review(true, "system:serviceaccount:shop:web", json::object(), json::array({"api"})),
        "not for the audience \"tollgate\"");
  json no_audiences = review(true, "system:serviceaccount:shop:web");
  no_audiences["status"].erase("audiences");
  fails(no_audiences, "audience");
  fails(json::object(), "no status");
  fails(json{{"status", {{"authenticated", true}, {"audiences", {"tollgate"}}}}}, "no user");
  fails(json{{"status", {{"authenticated", "yes"}}}}, "not valid");
  // A person's token is authenticated, but reads no pod table.
  const auto person =
      auth::identity_from_token_review(review(true, "alice@example.com"), "tollgate");
  REQUIRE(person.ok());
  CHECK(person->sa_name.empty());
  CHECK_FALSE(auth::may_read_table(*person, kWeb).ok());
  // Malformed service-account names are not service accounts.
  for (const char* u : {"system:serviceaccount:shop", "system:serviceaccount::web",
                        "system:serviceaccount:shop:", "system:serviceaccount:a:b:c"}) {
    const auto id = auth::identity_from_token_review(review(true, u), "tollgate");
    REQUIRE(id.ok());
    CHECK(id->sa_name.empty());
  }
}

TEST_CASE("a SPIFFE certificate names a service account like its token") {
  const auto id = auth::identity_from_spiffe("spiffe://cluster.local/ns/shop/sa/web");
  REQUIRE(id);
  CHECK(id->from_certificate);
  CHECK(id->username == "system:serviceaccount:shop:web");
  CHECK(auth::may_read_table(*id, kWeb).ok());
  CHECK_FALSE(auth::may_read_table(*id, {"shop", "db-0", "x", "db"}).ok());
  CHECK(auth::identity_from_spiffe("td/ns/a/sa/b"));
  for (const char* bad :
       {"", "spiffe://", "cluster.local", "cluster.local/ns/shop", "cluster.local/ns//sa/web",
        "cluster.local/ns/shop/sa/", "cluster.local/ns/shop/sa/web/x", "/ns/shop/sa/web",
        "cluster.local/namespace/shop/sa/web"}) {
    INFO(bad);
    CHECK_FALSE(auth::identity_from_spiffe(bad));
  }
}

TEST_CASE("the TokenReview sent carries the token and the audience") {
  const json r = auth::token_review_request("abc", "tollgate");
  CHECK(r["kind"] == "TokenReview");
  CHECK(r["spec"]["token"] == "abc");
  CHECK(r["spec"]["audiences"] == json::array({"tollgate"}));
}

TEST_CASE("the verdict cache stays bounded and forgets what expired") {
  using Clock = std::chrono::steady_clock;
  util::TtlCache<int> cache(3);
  const auto t0 = Clock::now();
  cache.put("a", 1, t0 + std::chrono::seconds(10));
  cache.put("b", 2, t0 + std::chrono::seconds(1));
  cache.put("c", 3, t0 + std::chrono::seconds(10));
  CHECK(cache.get("a", t0) == 1);                    // a is now the most recently used
  cache.put("d", 4, t0 + std::chrono::seconds(10));  // evicts b, the least recently used
  CHECK(cache.size() == 3);
  CHECK_FALSE(cache.get("b", t0));
  CHECK(cache.get("c", t0) == 3);
  CHECK_FALSE(cache.get("c", t0 + std::chrono::seconds(10)));  // expired
  CHECK(cache.size() == 2);
  for (int i = 0; i < 10000; ++i) cache.put("k" + std::to_string(i), i, t0 + std::chrono::hours(1));
  CHECK(cache.size() == 3);
  CHECK(cache.get("k9999", t0) == 9999);
}
