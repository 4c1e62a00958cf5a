// The fake API server driven by a tiny blocking Beast client over HTTP and HTTPS.
#include "test/support/fake_apiserver.h"

#include "test/support/certs.h"

// GCC 12 in C++20 mode needs <utility> before Boost's headers.
#include <utility>

#include <chrono>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using json = nlohmann::json;
using tollgate::testing::FakeApiServer;
using tollgate::testing::FakeApiServerOptions;
using tollgate::testing::Pem;
using Fault = FakeApiServer::Fault;
using Clock = std::chrono::steady_clock;

constexpr const char* kPods = "/api/v1/pods";
constexpr const char* kPolicies = "/apis/security.istio.io/v1/authorizationpolicies";

json pod(const std::string& ns, const std::string& name, const std::string& image = "nginx") {
  return {{"metadata", {{"namespace", ns}, {"name", name}}},
          {"spec", {{"containers", json::array({{{"name", "c"}, {"image", image}}})}}}};
}

struct ClientOptions {
  bool tls = false;
  std::string ca_pem;
  std::string verify_host = "127.0.0.1";
  std::optional<Pem> client_certificate;
};

ClientOptions tls_options(std::string ca_pem, std::string verify_host = "127.0.0.1",
                          std::optional<Pem> client_certificate = std::nullopt) {
  ClientOptions o;
  o.tls = true;
  o.ca_pem = std::move(ca_pem);
  o.verify_host = std::move(verify_host);
  o.client_certificate = std::move(client_certificate);
  return o;
}

struct Response {
  int status = 0;  // 0: no response (transport error)
  beast::error_code error;
  std::string body;
  std::string content_type;
  std::string retry_after;
  json parsed() const { return json::parse(body); }
};

enum class End { kNone, kClean, kAbrupt, kTimeout };

// One connection; every operation runs asynchronously under a deadline on a private io_context.
class Client {
 public:
  explicit Client(std::uint16_t port, ClientOptions options = {})
      : port_(port), options_(std::move(options)) {
    if (options_.tls) {
      ctx_.set_verify_mode(ssl::verify_peer);
      if (!options_.ca_pem.empty()) ctx_.add_certificate_authority(net::buffer(options_.ca_pem));
      if (options_.client_certificate) {
        ctx_.use_certificate_chain(net::buffer(options_.client_certificate->certificate));
        ctx_.use_private_key(net::buffer(options_.client_certificate->private_key),
                             ssl::context::pem);
      }
      tls_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc_, ctx_);
      tls_->set_verify_callback(ssl::host_name_verification(options_.verify_host));
    } else {
      plain_ = std::make_unique<beast::tcp_stream>(ioc_);
    }
  }

  beast::error_code connect() {
    beast::error_code ec = run([&](auto handler) {
      lowest().async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port_), handler);
    });
    if (!ec && tls_) {
      ec = run([&](auto handler) { tls_->async_handshake(ssl::stream_base::client, handler); });
    }
    connected_ = !ec;
    return ec;
  }

  Response get(const std::string& target, const std::string& token = "") {
    Response out;
    if (!connected_ && (out.error = connect())) return out;
    out.error = send(target, token);
    if (out.error) return out;
    http::response<http::string_body> res;
    out.error = with_stream([&](auto& s) {
      return run([&](auto handler) { http::async_read(s, buffer_, res, handler); });
    });
    if (out.error) return out;
    out.status = static_cast<int>(res.result_int());
    out.body = res.body();
    out.content_type = std::string(res[http::field::content_type]);
    out.retry_after = std::string(res[http::field::retry_after]);
    return out;
  }

  // Sends a watch request and reads the response header. Returns the status (0 on error).
  int start_watch(const std::string& target, const std::string& token = "") {
    if (!connected_ && connect()) return 0;
    if (send(target, token)) return 0;
    parser_.emplace();
    parser_->body_limit((std::numeric_limits<std::uint64_t>::max)());
    consumed_ = 0;
    end_ = End::kNone;
    const beast::error_code ec = with_stream([&](auto& s) {
      return run([&](auto handler) { http::async_read_header(s, buffer_, *parser_, handler); });
    });
    if (ec) return 0;
    return static_cast<int>(parser_->get().result_int());
  }
  bool watch_chunked() const { return parser_->get().chunked(); }
  std::string watch_content_type() const {
    return std::string(parser_->get()[http::field::content_type]);
  }

  // The next line of the watch body, or nullopt when the stream ended (see end()).
  std::optional<std::string> next_line(double timeout_seconds = 5) {
    for (;;) {
      std::string& body = parser_->get().body();
      const auto nl = body.find('\n', consumed_);
      if (nl != std::string::npos) {
        std::string line = body.substr(consumed_, nl - consumed_);
        consumed_ = nl + 1;
        return line;
      }
      if (parser_->is_done()) {
        end_ = End::kClean;
        return std::nullopt;
      }
      if (end_ != End::kNone) return std::nullopt;
      const beast::error_code ec = with_stream([&](auto& s) {
        return run([&](auto handler) { http::async_read_some(s, buffer_, *parser_, handler); },
                   timeout_seconds);
      });
      if (ec == beast::error::timeout) {
        end_ = End::kTimeout;
      } else if (ec) {
        end_ = End::kAbrupt;
      }
    }
  }
  std::optional<json> next_event(double timeout_seconds = 5) {
    auto line = next_line(timeout_seconds);
    if (!line) return std::nullopt;
    return json::parse(*line);
  }
  End end() const { return end_; }

 private:
  beast::tcp_stream& lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : *plain_; }

  template <class F>
  beast::error_code with_stream(F f) {
    if (tls_) return f(*tls_);
    return f(*plain_);
  }

  beast::error_code send(const std::string& target, const std::string& token) {
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::accept, "application/json");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    req.keep_alive(true);
    return with_stream(
        [&](auto& s) { return run([&](auto handler) { http::async_write(s, req, handler); }); });
  }

  template <class Start>
  beast::error_code run(Start start, double timeout_seconds = 5) {
    beast::error_code result = net::error::would_block;
    lowest().expires_after(std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::duration<double>(timeout_seconds)));
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc_.restart();
    ioc_.run();
    return result;
  }

  std::uint16_t port_;
  ClientOptions options_;
  net::io_context ioc_;
  ssl::context ctx_{ssl::context::tls_client};
  std::unique_ptr<beast::tcp_stream> plain_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_;
  bool connected_ = false;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
  std::size_t consumed_ = 0;
  End end_ = End::kNone;
};

std::vector<std::string> names(const json& items) {
  std::vector<std::string> out;
  for (const json& item : items) {
    out.push_back(item["metadata"].value("namespace", "") + "/" +
                  item["metadata"]["name"].get<std::string>());
  }
  return out;
}

std::uint64_t rv_of(const json& object) {
  return std::stoull(object["metadata"]["resourceVersion"].get<std::string>());
}

void check_status(const Response& r, int code, const std::string& reason) {
  REQUIRE(r.status == code);
  CHECK(r.content_type == "application/json");
  const json body = r.parsed();
  CHECK(body["kind"] == "Status");
  CHECK(body["apiVersion"] == "v1");
  CHECK(body["status"] == "Failure");
  CHECK(body["reason"] == reason);
  CHECK(body["code"] == code);
  CHECK(body["message"].is_string());
}

struct Fixture {
  Fixture() {
    server.add_collection(kPods, "PodList", "v1", false);
    server.add_collection(kPolicies, "AuthorizationPolicyList", "security.istio.io/v1", true);
  }
  FakeApiServer server;
};

}  // namespace

TEST_CASE("A list returns the items sorted by namespace and name at the current resourceVersion") {
  Fixture f;
  f.server.upsert(kPods, pod("b", "x"));
  f.server.upsert(kPods, pod("a-b", "z"));
  f.server.upsert(kPods, pod("a", "y"));
  f.server.upsert(kPolicies, {{"kind", "AuthorizationPolicy"},
                              {"apiVersion", "security.istio.io/v1"},
                              {"metadata", {{"namespace", "a"}, {"name", "p"}}}});
  Client client(f.server.port());

  const Response pods = client.get(kPods);
  REQUIRE(pods.status == 200);
  CHECK(pods.content_type == "application/json");
  const json list = pods.parsed();
  CHECK(list["kind"] == "PodList");
  CHECK(list["apiVersion"] == "v1");
  CHECK(list["metadata"]["resourceVersion"] == f.server.resource_version());
  CHECK_FALSE(list["metadata"].contains("continue"));
  CHECK(names(list["items"]) == std::vector<std::string>{"a/y", "a-b/z", "b/x"});
  CHECK_FALSE(list["items"][0].contains("kind"));  // core list items carry no kind
  CHECK(list["items"][0]["metadata"]["uid"].is_string());
  CHECK(names(f.server.objects(kPods)) == std::vector<std::string>{"a/y", "a-b/z", "b/x"});

  // Keep-alive: the second request reuses the connection.
  const json policies = client.get(kPolicies).parsed();
  CHECK(policies["kind"] == "AuthorizationPolicyList");
  CHECK(policies["items"][0]["kind"] == "AuthorizationPolicy");
  CHECK(policies["items"][0]["apiVersion"] == "security.istio.io/v1");
  CHECK(f.server.requests().size() == 2);
}

TEST_CASE("An unregistered path answers 404 with a Status body") {
  Fixture f;
  Client client(f.server.port());
  check_status(client.get("/apis/security.istio.io/v1beta1/authorizationpolicies"), 404,
               "NotFound");
}

TEST_CASE("Pagination serves a consistent snapshot across mutations between pages") {
  Fixture f;
  for (const char* name : {"p1", "p2", "p3", "p4", "p5"}) f.server.upsert(kPods, pod("ns", name));
  const std::string rv = f.server.resource_version();
  Client client(f.server.port());

  const json page1 = client.get(std::string(kPods) + "?limit=2").parsed();
  CHECK(names(page1["items"]) == std::vector<std::string>{"ns/p1", "ns/p2"});
  CHECK(page1["metadata"]["resourceVersion"] == rv);
  CHECK(page1["metadata"]["remainingItemCount"] == 3);
  const std::string token1 = page1["metadata"]["continue"];
  REQUIRE_FALSE(token1.empty());

  // Mutations after the first page must not show in the later pages.
  f.server.remove(kPods, "ns", "p3");
  f.server.upsert(kPods, pod("ns", "p4", "changed"));
  f.server.upsert(kPods, pod("ns", "p35"));

  const json page2 = client.get(std::string(kPods) + "?limit=2&continue=" + token1).parsed();
  CHECK(names(page2["items"]) == std::vector<std::string>{"ns/p3", "ns/p4"});
  CHECK(page2["items"][1]["spec"]["containers"][0]["image"] == "nginx");
  CHECK(page2["metadata"]["resourceVersion"] == rv);
  const std::string token2 = page2["metadata"]["continue"];
  const json page3 = client.get(std::string(kPods) + "?limit=2&continue=" + token2).parsed();
  CHECK(names(page3["items"]) == std::vector<std::string>{"ns/p5"});
  CHECK(page3["metadata"]["resourceVersion"] == rv);
  CHECK_FALSE(page3["metadata"].contains("continue"));

  // A fresh list sees the current state.
  const json fresh = client.get(kPods).parsed();
  CHECK(names(fresh["items"]) ==
        std::vector<std::string>{"ns/p1", "ns/p2", "ns/p35", "ns/p4", "ns/p5"});
  CHECK(fresh["metadata"]["resourceVersion"] == f.server.resource_version());
  CHECK(fresh["metadata"]["resourceVersion"] != rv);
}

TEST_CASE("set_max_page caps a page even when the limit is larger or absent") {
  Fixture f;
  for (const char* name : {"p1", "p2", "p3"}) f.server.upsert(kPods, pod("ns", name));
  f.server.set_max_page(2);
  Client client(f.server.port());
  const json page1 = client.get(std::string(kPods) + "?limit=500").parsed();
  CHECK(page1["items"].size() == 2);
  const json page2 =
      client
          .get(std::string(kPods) + "?continue=" + page1["metadata"]["continue"].get<std::string>())
          .parsed();
  CHECK(names(page2["items"]) == std::vector<std::string>{"ns/p3"});
  CHECK(client.get(std::string(kPods) + "?continue=bm90IGEgdG9rZW4").status == 400);
}

TEST_CASE("A watch streams ADDED, MODIFIED and DELETED events as chunked JSON lines") {
  Fixture f;
  f.server.upsert(kPods, pod("ns", "a"));
  const std::string rv = f.server.resource_version();
  Client watcher(f.server.port());
  REQUIRE(watcher.start_watch(std::string(kPods) + "?watch=1&resourceVersion=" + rv) == 200);
  CHECK(watcher.watch_chunked());
  CHECK(watcher.watch_content_type() == "application/json");
  REQUIRE(f.server.wait_for_watches(kPods, 1, 5));
  CHECK(f.server.open_watches(kPods) == 1);

  f.server.upsert(kPods, pod("ns", "b"));
  f.server.upsert(kPods, pod("ns", "b", "changed"));
  f.server.remove(kPods, "ns", "b");

  const auto added = watcher.next_event();
  REQUIRE(added);
  CHECK((*added)["type"] == "ADDED");
  CHECK((*added)["object"]["kind"] == "Pod");  // watch event objects always carry their kind
  CHECK((*added)["object"]["apiVersion"] == "v1");
  CHECK((*added)["object"]["metadata"]["name"] == "b");
  const auto modified = watcher.next_event();
  REQUIRE(modified);
  CHECK((*modified)["type"] == "MODIFIED");
  CHECK((*modified)["object"]["spec"]["containers"][0]["image"] == "changed");
  const auto deleted = watcher.next_event();
  REQUIRE(deleted);
  CHECK((*deleted)["type"] == "DELETED");
  CHECK((*deleted)["object"]["metadata"]["name"] == "b");
  CHECK(rv_of((*added)["object"]) > std::stoull(rv));
  CHECK(rv_of((*modified)["object"]) > rv_of((*added)["object"]));
  CHECK(rv_of((*deleted)["object"]) > rv_of((*modified)["object"]));
  CHECK(std::to_string(rv_of((*deleted)["object"])) == f.server.resource_version());
  CHECK_FALSE(watcher.next_line(0.3));  // nothing more, the stream stays open
  CHECK(watcher.end() == End::kTimeout);
}

TEST_CASE("A watch from an older resourceVersion replays the events after it first") {
  Fixture f;
  f.server.upsert(kPods, pod("ns", "a"));
  const std::string rv = f.server.resource_version();
  f.server.upsert(kPods, pod("ns", "b"));
  f.server.upsert(kPods, pod("ns", "a", "changed"));
  Client watcher(f.server.port());
  REQUIRE(watcher.start_watch(std::string(kPods) + "?watch=true&resourceVersion=" + rv) == 200);
  const auto first = watcher.next_event();
  const auto second = watcher.next_event();
  REQUIRE(first);
  REQUIRE(second);
  CHECK((*first)["type"] == "ADDED");
  CHECK((*first)["object"]["metadata"]["name"] == "b");
  CHECK((*second)["type"] == "MODIFIED");
  CHECK((*second)["object"]["metadata"]["name"] == "a");
  CHECK_FALSE(watcher.next_line(0.3));
}

TEST_CASE("A watch without a resourceVersion starts with ADDED events for the current state") {
  Fixture f;
  f.server.upsert(kPods, pod("ns", "b"));
  f.server.upsert(kPods, pod("ns", "a"));
  Client watcher(f.server.port());
  REQUIRE(watcher.start_watch(std::string(kPods) + "?watch=1") == 200);
  std::vector<std::string> seen;
  for (int i = 0; i < 2; ++i) {
    const auto e = watcher.next_event();
    REQUIRE(e);
    CHECK((*e)["type"] == "ADDED");
    seen.push_back((*e)["object"]["metadata"]["name"]);
  }
  CHECK(seen == std::vector<std::string>{"a", "b"});
  f.server.upsert(kPods, pod("ns", "c"));
  const auto e = watcher.next_event();
  REQUIRE(e);
  CHECK((*e)["object"]["metadata"]["name"] == "c");
}

TEST_CASE("A namespaced path lists and watches only that namespace") {
  Fixture f;
  f.server.upsert(kPods, pod("one", "a"));
  f.server.upsert(kPods, pod("two", "b"));
  Client client(f.server.port());
  const json list = client.get("/api/v1/namespaces/two/pods").parsed();
  CHECK(names(list["items"]) == std::vector<std::string>{"two/b"});
  const json policies =
      client.get("/apis/security.istio.io/v1/namespaces/two/authorizationpolicies").parsed();
  CHECK(policies["items"].empty());

  Client watcher(f.server.port());
  REQUIRE(watcher.start_watch("/api/v1/namespaces/one/pods?watch=1&resourceVersion=" +
                              list["metadata"]["resourceVersion"].get<std::string>()) == 200);
  REQUIRE(f.server.wait_for_watches(kPods, 1, 5));
  f.server.upsert(kPods, pod("two", "c"));
  f.server.upsert(kPods, pod("one", "d"));
  const auto e = watcher.next_event();
  REQUIRE(e);
  CHECK((*e)["object"]["metadata"]["name"] == "d");
}

TEST_CASE("A bookmark reaches only the watches that asked for bookmarks") {
  Fixture f;
  f.server.upsert(kPolicies, {{"metadata", {{"namespace", "ns"}, {"name", "p"}}}});
  const std::string rv = f.server.resource_version();
  Client with(f.server.port());
  Client without(f.server.port());
  REQUIRE(with.start_watch(std::string(kPolicies) + "?watch=1&allowWatchBookmarks=true&" +
                           "resourceVersion=" + rv) == 200);
  REQUIRE(without.start_watch(std::string(kPolicies) + "?watch=1&resourceVersion=" + rv) == 200);
  REQUIRE(f.server.wait_for_watches(kPolicies, 2, 5));
  f.server.bookmark(kPolicies);
  const auto e = with.next_event();
  REQUIRE(e);
  CHECK((*e)["type"] == "BOOKMARK");
  CHECK((*e)["object"]["kind"] == "AuthorizationPolicy");
  CHECK((*e)["object"]["apiVersion"] == "security.istio.io/v1");
  CHECK((*e)["object"]["metadata"]["resourceVersion"] == f.server.resource_version());
  CHECK_FALSE(without.next_line(0.3));
}

TEST_CASE("After compaction old resourceVersions and continue tokens are expired with 410") {
  Fixture f;
  for (const char* name : {"p1", "p2", "p3"}) f.server.upsert(kPods, pod("ns", name));
  Client client(f.server.port());
  const json page1 = client.get(std::string(kPods) + "?limit=1").parsed();
  const std::string old_rv = page1["metadata"]["resourceVersion"];
  f.server.compact();

  check_status(client.get(std::string(kPods) +
                          "?limit=1&continue=" + page1["metadata"]["continue"].get<std::string>()),
               410, "Expired");

  Client old_watch(f.server.port());
  REQUIRE(old_watch.start_watch(std::string(kPods) + "?watch=1&resourceVersion=" + old_rv) == 200);
  const auto error = old_watch.next_event();
  REQUIRE(error);
  CHECK((*error)["type"] == "ERROR");
  CHECK((*error)["object"]["kind"] == "Status");
  CHECK((*error)["object"]["code"] == 410);
  CHECK((*error)["object"]["reason"] == "Expired");
  CHECK_FALSE(old_watch.next_line());
  CHECK(old_watch.end() == End::kClean);

  // A relist gets a resourceVersion that can be watched again.
  const json relist = client.get(kPods).parsed();
  Client new_watch(f.server.port());
  REQUIRE(new_watch.start_watch(std::string(kPods) + "?watch=1&resourceVersion=" +
                                relist["metadata"]["resourceVersion"].get<std::string>()) == 200);
  REQUIRE(f.server.wait_for_watches(kPods, 1, 5));
  f.server.upsert(kPods, pod("ns", "p4"));
  const auto added = new_watch.next_event();
  REQUIRE(added);
  CHECK((*added)["type"] == "ADDED");
}

TEST_CASE("timeoutSeconds and close_watches end a watch cleanly with the final chunk") {
  Fixture f;
  const std::string rv = f.server.resource_version();
  Client timed(f.server.port());
  const auto start = Clock::now();
  REQUIRE(timed.start_watch(std::string(kPods) +
                            "?watch=1&timeoutSeconds=1&resourceVersion=" + rv) == 200);
  CHECK_FALSE(timed.next_line(5));
  CHECK(timed.end() == End::kClean);
  CHECK(Clock::now() - start >= std::chrono::milliseconds(900));

  // The connection stays usable after a clean end.
  CHECK(timed.get(kPods).status == 200);

  Client closed(f.server.port());
  REQUIRE(closed.start_watch(std::string(kPods) + "?watch=1&resourceVersion=" + rv) == 200);
  REQUIRE(f.server.wait_for_watches(kPods, 1, 5));
  f.server.close_watches(kPods);
  CHECK_FALSE(closed.next_line(5));
  CHECK(closed.end() == End::kClean);
  for (int i = 0; i < 100 && f.server.open_watches(kPods) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(f.server.open_watches(kPods) == 0);
}

TEST_CASE("Injected HTTP faults answer in order with a Status body, then normal service resumes") {
  Fixture f;
  f.server.inject(kPods, Fault::kHttp401);
  f.server.inject(kPods, Fault::kHttp403);
  f.server.inject(kPods, Fault::kHttp429, 2);
  f.server.inject(kPods, Fault::kHttp500);
  f.server.inject(kPods, Fault::kHttp410);
  Client client(f.server.port());
  check_status(client.get(kPods), 401, "Unauthorized");
  check_status(client.get(kPods), 403, "Forbidden");
  const Response throttled = client.get(kPods);
  check_status(throttled, 429, "TooManyRequests");
  CHECK(throttled.retry_after == "1");
  check_status(client.get(std::string(kPods) + "?watch=1"), 429, "TooManyRequests");
  check_status(client.get(kPods), 500, "InternalError");
  check_status(client.get(kPods), 410, "Expired");
  CHECK(client.get(kPods).status == 200);
  // Faults belong to their collection.
  f.server.inject(kPods, Fault::kHttp500);
  CHECK(client.get(kPolicies).status == 200);

  std::vector<int> statuses;
  for (const auto& r : f.server.requests()) statuses.push_back(r.status);
  CHECK(statuses == std::vector<int>{401, 403, 429, 429, 500, 410, 200, 200});
}

TEST_CASE("kDropBeforeResponse closes the connection without an answer") {
  Fixture f;
  f.server.inject(kPods, Fault::kDropBeforeResponse);
  Client dropped(f.server.port());
  const Response r = dropped.get(kPods);
  CHECK(r.status == 0);
  CHECK(r.error);
  CHECK(f.server.requests().back().status == 0);
  Client next(f.server.port());
  CHECK(next.get(kPods).status == 200);
}

TEST_CASE("Watch faults wait for a watch request and lists do not consume them") {
  Fixture f;
  f.server.upsert(kPods, pod("ns", "a"));
  const std::string rv = f.server.resource_version();
  f.server.upsert(kPods, pod("ns", "b"));
  f.server.inject(kPods, Fault::kDropMidStream);
  Client client(f.server.port());
  CHECK(client.get(kPods).status == 200);

  SECTION("kDropMidStream sends the pending events then closes without the final chunk") {
    Client watcher(f.server.port());
    REQUIRE(watcher.start_watch(std::string(kPods) + "?watch=1&resourceVersion=" + rv) == 200);
    const auto e = watcher.next_event();
    REQUIRE(e);
    CHECK((*e)["object"]["metadata"]["name"] == "b");
    CHECK_FALSE(watcher.next_line());
    CHECK(watcher.end() == End::kAbrupt);
    // The fault is consumed: the next watch is normal.
    Client again(f.server.port());
    REQUIRE(again.start_watch(std::string(kPods) + "?watch=1&resourceVersion=" + rv) == 200);
    CHECK(again.next_event());
    CHECK_FALSE(again.next_line(0.3));
    CHECK(again.end() == End::kTimeout);
  }
}

TEST_CASE("kGarbageLine sends one line that is not JSON and then continues normally") {
  Fixture f;
  f.server.upsert(kPods, pod("ns", "a"));
  const std::string rv = f.server.resource_version();
  f.server.upsert(kPods, pod("ns", "b"));
  f.server.inject(kPods, Fault::kGarbageLine);
  Client watcher(f.server.port());
  REQUIRE(watcher.start_watch(std::string(kPods) + "?watch=1&resourceVersion=" + rv) == 200);
  const auto garbage = watcher.next_line();
  REQUIRE(garbage);
  CHECK_FALSE(json::accept(*garbage));
  const auto e = watcher.next_event();
  REQUIRE(e);
  CHECK((*e)["object"]["metadata"]["name"] == "b");
  f.server.upsert(kPods, pod("ns", "c"));
  const auto later = watcher.next_event();
  REQUIRE(later);
  CHECK((*later)["object"]["metadata"]["name"] == "c");
}

TEST_CASE("kStall sends the headers, then nothing for stall_seconds, then closes") {
  Fixture f;
  f.server.set_stall_seconds(0.5);
  f.server.inject(kPods, Fault::kStall);
  const std::string rv = f.server.resource_version();
  f.server.upsert(kPods, pod("ns", "a"));  // pending, but the stalled watch does not send it
  Client watcher(f.server.port());
  const auto start = Clock::now();
  REQUIRE(watcher.start_watch(std::string(kPods) + "?watch=1&resourceVersion=" + rv) == 200);
  CHECK_FALSE(watcher.next_line(5));
  CHECK(watcher.end() == End::kAbrupt);
  CHECK(Clock::now() - start >= std::chrono::milliseconds(450));
  CHECK(Clock::now() - start < std::chrono::seconds(4));
}

TEST_CASE("kErrorEvent410 sends one ERROR event with a 410 Status and ends the stream") {
  Fixture f;
  f.server.inject(kPods, Fault::kErrorEvent410);
  Client watcher(f.server.port());
  REQUIRE(watcher.start_watch(std::string(kPods) +
                              "?watch=1&resourceVersion=" + f.server.resource_version()) == 200);
  const auto e = watcher.next_event();
  REQUIRE(e);
  CHECK((*e)["type"] == "ERROR");
  CHECK((*e)["object"]["kind"] == "Status");
  CHECK((*e)["object"]["status"] == "Failure");
  CHECK((*e)["object"]["code"] == 410);
  CHECK((*e)["object"]["reason"] == "Expired");
  CHECK_FALSE(watcher.next_line());
  CHECK(watcher.end() == End::kClean);
}

TEST_CASE("A bearer token is required when set and a rotated token takes effect at once") {
  FakeApiServerOptions options;
  options.bearer_token = "first";
  FakeApiServer server(options);
  server.add_collection(kPods, "PodList", "v1", false);
  Client client(server.port());
  check_status(client.get(kPods), 401, "Unauthorized");
  check_status(client.get(kPods, "wrong"), 401, "Unauthorized");
  CHECK(client.get(kPods, "first").status == 200);
  server.set_bearer_token("second");
  check_status(client.get(kPods, "first"), 401, "Unauthorized");
  CHECK(client.get(kPods, "second").status == 200);

  const auto requests = server.requests();
  REQUIRE(requests.size() == 5);
  CHECK(requests[0].method == "GET");
  CHECK(requests[0].target == kPods);
  CHECK(requests[0].authorization.empty());
  CHECK(requests[1].authorization == "Bearer wrong");
  CHECK(requests[2].status == 200);
  CHECK(requests[4].authorization == "Bearer second");
}

TEST_CASE("TLS serves a certificate that verifies for 127.0.0.1 and localhost only") {
  FakeApiServerOptions options;
  options.tls = true;
  FakeApiServer server(options);
  server.add_collection(kPods, "PodList", "v1", false);
  server.upsert(kPods, pod("ns", "a"));
  CHECK(server.url() == "https://127.0.0.1:" + std::to_string(server.port()));
  REQUIRE(server.ca_pem().find("-----BEGIN CERTIFICATE-----") == 0);

  Client by_ip(server.port(), tls_options(server.ca_pem()));
  const Response r = by_ip.get(kPods);
  REQUIRE(r.status == 200);
  CHECK(names(r.parsed()["items"]) == std::vector<std::string>{"ns/a"});

  Client by_name(server.port(), tls_options(server.ca_pem(), "localhost"));
  CHECK_FALSE(by_name.connect());

  Client wrong_name(server.port(), tls_options(server.ca_pem(), "example.com"));
  CHECK(wrong_name.connect());

  Client untrusted(server.port(), tls_options(""));
  CHECK(untrusted.connect());

  Client watcher(server.port(), tls_options(server.ca_pem()));
  REQUIRE(watcher.start_watch(std::string(kPods) + "?watch=1") == 200);
  const auto e = watcher.next_event();
  REQUIRE(e);
  CHECK((*e)["type"] == "ADDED");
}

TEST_CASE("TLS with a client CA rejects clients without a certificate signed by it") {
  const Pem client_cert = tollgate::testing::make_self_signed("tollgate");
  FakeApiServerOptions options;
  options.tls = true;
  options.client_ca_pem = client_cert.certificate;
  FakeApiServer server(options);
  server.add_collection(kPods, "PodList", "v1", false);

  Client anonymous(server.port(), tls_options(server.ca_pem()));
  CHECK(anonymous.get(kPods).status == 0);
  Client stranger(server.port(), tls_options(server.ca_pem(), "127.0.0.1",
                                             tollgate::testing::make_self_signed("x")));
  CHECK(stranger.get(kPods).status == 0);
  Client known(server.port(), tls_options(server.ca_pem(), "127.0.0.1", client_cert));
  CHECK(known.get(kPods).status == 200);
}

TEST_CASE("sendInitialEvents streams the current state then an initial-events-end bookmark") {
  Fixture f;
  f.server.upsert(kPods, pod("ns", "a"));
  Client watcher(f.server.port());
  REQUIRE(watcher.start_watch(std::string(kPods) +
                              "?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan" +
                              "&allowWatchBookmarks=true") == 200);
  const auto added = watcher.next_event();
  REQUIRE(added);
  CHECK((*added)["type"] == "ADDED");
  const auto bookmark = watcher.next_event();
  REQUIRE(bookmark);
  CHECK((*bookmark)["type"] == "BOOKMARK");
  CHECK((*bookmark)["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true");
  CHECK((*bookmark)["object"]["metadata"]["resourceVersion"] == f.server.resource_version());
}

TEST_CASE("The streaming list goes on as a watch after its bookmark") {
  Fixture f;
  f.server.upsert(kPods, pod("ns", "a"));
  Client watcher(f.server.port());
  REQUIRE(watcher.start_watch(std::string(kPods) +
                              "?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan" +
                              "&allowWatchBookmarks=true&resourceVersion=1") == 200);
  REQUIRE(watcher.next_event());  // ADDED a (the state, not the history after rv 1)
  REQUIRE((*watcher.next_event())["type"] == "BOOKMARK");
  f.server.upsert(kPods, pod("ns", "b"));
  const auto e = watcher.next_event();
  REQUIRE(e);
  CHECK((*e)["type"] == "ADDED");
  CHECK((*e)["object"]["metadata"]["name"] == "b");
}

TEST_CASE("sendInitialEvents and resourceVersionMatch are validated as kube-apiserver does") {
  Fixture f;
  Client c(f.server.port());
  const std::string w = std::string(kPods) + "?watch=1";
  SECTION("sendInitialEvents without resourceVersionMatch=NotOlderThan") {
    const auto r = c.get(w + "&sendInitialEvents=true");
    check_status(r, 422, "Invalid");
    CHECK_THAT(r.parsed()["message"].get<std::string>(),
               Catch::Contains("sendInitialEvents requires setting resourceVersionMatch"));
  }
  SECTION("resourceVersionMatch on a watch without sendInitialEvents") {
    check_status(c.get(w + "&resourceVersionMatch=NotOlderThan"), 422, "Invalid");
  }
  SECTION("sendInitialEvents on a list") {
    const auto r = c.get(std::string(kPods) + "?sendInitialEvents=true");
    check_status(r, 422, "Invalid");
    CHECK_THAT(r.parsed()["message"].get<std::string>(), Catch::Contains("forbidden for list"));
  }
  SECTION("the feature switched off") {
    f.server.set_watch_list(FakeApiServer::WatchList::kRefuse);
    const auto r = c.get(w + "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan");
    check_status(r, 422, "Invalid");
    CHECK_THAT(r.parsed()["message"].get<std::string>(),
               Catch::Contains("unless the WatchList feature gate is enabled"));
  }
  SECTION("malformed label and field selectors are refused, not ignored") {
    check_status(c.get(std::string(kPods) + "?labelSelector=a%20b"), 400, "BadRequest");
    check_status(c.get(w + "&fieldSelector=status.phase"), 400, "BadRequest");
    CHECK(c.get(std::string(kPods) + "?labelSelector=app%3Dx").status == 200);
  }
}

TEST_CASE("A server that ignores sendInitialEvents serves a plain watch without the bookmark") {
  Fixture f;
  f.server.set_watch_list(FakeApiServer::WatchList::kIgnore);
  f.server.upsert(kPods, pod("ns", "a"));
  Client watcher(f.server.port());
  REQUIRE(watcher.start_watch(std::string(kPods) +
                              "?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan" +
                              "&allowWatchBookmarks=true") == 200);
  const auto added = watcher.next_event();  // synthetic ADDED, as for any watch without rv
  REQUIRE(added);
  CHECK((*added)["type"] == "ADDED");
  // The stream is ordered: a bookmark asked for now comes after anything sent before it, and
  // it is the first, without the initial-events-end annotation.
  REQUIRE(f.server.wait_for_watches(kPods, 1, 5));
  f.server.bookmark(kPods);
  const auto next = watcher.next_event();
  REQUIRE(next);
  CHECK((*next)["type"] == "BOOKMARK");
  CHECK_FALSE((*next)["object"]["metadata"].contains("annotations"));
}

TEST_CASE("The destructor returns promptly with stalled and open watches") {
  const auto start = Clock::now();
  {
    auto server = std::make_unique<FakeApiServer>();
    server->add_collection(kPods, "PodList", "v1", false);
    server->set_stall_seconds(30);
    server->inject(kPods, Fault::kStall);
    Client stalled(server->port());
    Client open(server->port());
    REQUIRE(stalled.start_watch(std::string(kPods) + "?watch=1") == 200);
    REQUIRE(open.start_watch(std::string(kPods) + "?watch=1") == 200);
    Client idle(server->port());
    REQUIRE(idle.get(kPods).status == 200);  // an idle keep-alive connection too
    REQUIRE(server->wait_for_watches(kPods, 2, 5));
    server.reset();
    CHECK(Clock::now() - start < std::chrono::seconds(3));
    CHECK_FALSE(open.next_line(2));
    CHECK(open.end() == End::kAbrupt);
  }
}
