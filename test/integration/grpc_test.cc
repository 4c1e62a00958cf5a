// The gRPC ext_authz server in-process on 127.0.0.1:0, called with grpc++ clients: generated
// requests decided through gRPC exactly as Authorizer::decide decides the same request given
// as JSON, the answer's shape, health, and hostile input (raw bytes, truncated frames, huge
// header maps, unknown fields, a missing attributes) after which the server still answers.
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "envoy/service/auth/v3/external_auth.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "support/check_requests.h"
#include "support/fixtures.h"
#include "tollgate/agent/grpc_server.h"
#include "tollgate/util/strings.h"

using namespace tollgate;
using nlohmann::json;
namespace auth = envoy::service::auth::v3;
namespace health = grpc::health::v1;

namespace {

constexpr const char* kCheckMethod = "/envoy.service.auth.v3.Authorization/Check";
constexpr const char* kJwt = "envoy.filters.http.jwt_authn";
constexpr const char* kExample = "envoy.filters.http.example";

// Eleven rules over every attribute the gRPC mapping fills.
constexpr const char* kPolicies = R"(
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
  - from: [{source: {ipBlocks: ["192.168.0.0/16"]}}]
    to: [{operation: {methods: ["DELETE"]}}]
---
kind: AuthorizationPolicy
metadata: {name: deny-remote, namespace: default}
spec:
  action: DENY
  rules:
  - from: [{source: {remoteIpBlocks: ["203.0.113.0/24"]}}]
  - when: [{key: "request.headers[x-token]", values: ["bad"]}]
---
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: default}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/frontend"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]
  - from: [{source: {namespaces: ["prod"]}}]
    to: [{operation: {ports: ["8080"]}}]
---
kind: AuthorizationPolicy
metadata: {name: allow-jwt, namespace: default}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]
    when: [{key: "request.auth.claims[groups]", values: ["admin"]}]
  - from: [{source: {requestPrincipals: ["*"]}}]
    to: [{operation: {hosts: ["backend.default.svc.cluster.local"], methods: ["GET"]}}]
---
kind: AuthorizationPolicy
metadata: {name: allow-misc, namespace: default}
spec:
  rules:
  - when: [{key: destination.ip, values: ["10.0.0.9"]}, {key: connection.sni, values: ["outbound_.9090_*"]}]
  - from: [{source: {notPrincipals: ["*"]}}]
    to: [{operation: {paths: ["/public/*"]}}]
  - when: [{key: "experimental.envoy.filters.http.example[tier]", values: ["gold"]}]
  - when: [{key: "request.auth.claims[scope]", values: ["write"]}]
)";

std::shared_ptr<agent::ActiveTable> mk_table() {
  auto t = std::make_shared<agent::ActiveTable>();
  t->table = compile::compile_table(testing::mk_policies(kPolicies),
                                    testing::mk_workload("default", {{"app", "backend"}}), {});
  return t;
}

// One generated request, as Envoy would describe it.
struct Spec {
  bool tcp = false;
  std::string principal;  // as Envoy sends it: "spiffe://...", "" or another SAN
  std::string source_ip, destination_ip, sni, method, path, host;
  std::optional<std::uint32_t> port;
  std::vector<std::pair<std::string, std::string>> headers;  // as sent: any case, repeats
  bool raw_headers = false;  // encode_raw_headers: header_map instead of headers
  json jwt_payload;          // null: no token
  std::string jwt_key = "payload";
  json example_metadata;  // null or the envoy.filters.http.example struct
};

template <typename T>
const T& pick(std::mt19937& rng, const std::vector<T>& v) {
  return v[std::uniform_int_distribution<std::size_t>(0, v.size() - 1)(rng)];
}

Spec mk_spec(std::mt19937& rng) {
  auto coin = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  Spec s;
  s.tcp = coin(0.2);
  s.principal =
      pick<std::string>(rng, {"", "spiffe://cluster.local/ns/default/sa/frontend",
                              "spiffe://cluster.local/ns/prod/sa/api",
                              "spiffe://other.td/ns/default/sa/frontend", "CN=client.example"});
  s.source_ip = pick<std::string>(rng, {"", "10.0.0.7", "192.168.1.5", "2001:db8::1"});
  s.destination_ip = pick<std::string>(rng, {"", "10.0.0.9", "10.0.0.10"});
  if (coin(0.7)) s.port = pick<std::uint32_t>(rng, {8080, 9090, 0});
  s.sni = pick<std::string>(rng, {"", "outbound_.9090_._.backend.default.svc.cluster.local"});
  if (coin(0.2)) s.example_metadata = {{"tier", pick<std::string>(rng, {"gold", "silver"})}};
  if (s.tcp) return s;
  s.method = pick<std::string>(rng, {"GET", "GET", "POST", "DELETE"});
  s.path = pick<std::string>(rng, {"/api/v1/data", "/api/../admin/x", "/admin", "/public/a",
                                   "/x?q=/admin", "/API/v1", ""});
  s.host = pick<std::string>(
      rng, {"", "backend.default.svc.cluster.local", "BACKEND.default.svc.cluster.local", "other"});
  if (coin(0.3)) s.headers.emplace_back("x-token", pick<std::string>(rng, {"abc", "bad"}));
  if (coin(0.2)) s.headers.emplace_back("X-Token", "also");  // joins with x-token
  if (coin(0.3)) {
    s.headers.emplace_back("x-forwarded-for",
                           pick<std::string>(rng, {"203.0.113.9", "198.51.100.1, 10.9.9.9",
                                                   "10.9.9.9, 203.0.113.200"}));
  }
  if (coin(0.3)) s.headers.emplace_back("accept", "text/html");
  s.raw_headers = coin(0.2);
  if (coin(0.5)) {
    json p = json::object();
    if (coin(0.8)) p["iss"] = pick<std::string>(rng, {"https://issuer.example", "https://other"});
    if (coin(0.8)) p["sub"] = pick<std::string>(rng, {"alice", "team/bob"});
    if (coin(0.4))
      p["groups"] = pick<json>(rng, {json{"admin"}, json{"dev", "ops"}, json("admin")});
    if (coin(0.3)) p["scope"] = pick<std::string>(rng, {"read write", "read"});
    if (coin(0.3)) p["exp"] = 1700000000;
    s.jwt_payload = p;
    s.jwt_key = pick<std::string>(rng, {"payload", "https://issuer.example"});
  }
  return s;
}

// The request of docs/api.md that says what `s` says.
json spec_json(const Spec& s) {
  json r = {{"protocol", s.tcp ? "tcp" : "http"}};
  json source = json::object();
  if (s.principal.starts_with("spiffe://")) source["principal"] = s.principal.substr(9);
  if (!s.source_ip.empty()) source["ip"] = s.source_ip;
  if (!s.destination_ip.empty()) r["destinationIp"] = s.destination_ip;
  if (s.port) r["port"] = *s.port;
  if (!s.sni.empty()) r["sni"] = s.sni;
  json metadata = json::object();
  if (!s.example_metadata.is_null()) metadata[kExample] = s.example_metadata;
  if (!s.tcp) {
    r["method"] = s.method;
    if (!s.path.empty()) r["path"] = s.path;
    if (!s.host.empty()) r["host"] = s.host;
    json headers = json::object();
    for (const auto& [n, v] : s.headers) {
      const std::string lower = tollgate::util::lowered(n);
      headers[lower].push_back(v);
      if (lower == "x-forwarded-for") {
        const std::string last = v.substr(v.rfind(',') == std::string::npos ? 0 : v.rfind(',') + 1);
        source["remoteIp"] = last.substr(last.find_first_not_of(' '));
      }
    }
    r["headers"] = headers;
    if (!s.jwt_payload.is_null()) {
      r["jwtClaims"] = s.jwt_payload;
      metadata[kJwt] = {{s.jwt_key, s.jwt_payload}};
    }
  } else if (!s.jwt_payload.is_null()) {
    metadata[kJwt] = {{s.jwt_key, s.jwt_payload}};
  }
  if (!metadata.empty()) r["dynamicMetadata"] = metadata;
  r["source"] = source;
  return r;
}

// The CheckRequest Envoy would send for `s`.
auth::CheckRequest spec_check(const Spec& s) {
  auth::CheckRequest c;
  auto* a = c.mutable_attributes();
  testing::mk_peer(*a->mutable_source(), s.principal, s.source_ip, 40000);
  testing::mk_peer(*a->mutable_destination(), "spiffe://cluster.local/ns/default/sa/backend",
                   s.destination_ip, s.port);
  if (!s.sni.empty()) a->mutable_tls_session()->set_sni(s.sni);
  if (!s.example_metadata.is_null()) testing::mk_metadata(c, kExample, s.example_metadata);
  if (!s.jwt_payload.is_null()) testing::mk_metadata(c, kJwt, {{s.jwt_key, s.jwt_payload}});
  if (s.tcp) return c;
  auto* http = a->mutable_request()->mutable_http();
  http->set_method(s.method);
  http->set_path(s.path);
  http->set_host(s.host);
  for (const auto& [n, v] : s.headers) {
    if (s.raw_headers) {
      auto* h = http->mutable_header_map()->add_headers();
      h->set_key(n);
      h->set_raw_value(v);
    } else {
      auto* h = http->add_headers();
      h->set_key(n);
      h->set_value(v);
    }
  }
  return c;
}

std::map<std::string, std::string> header_map(
    const google::protobuf::RepeatedPtrField<envoy::config::core::v3::HeaderValueOption>& hs) {
  std::map<std::string, std::string> out;
  for (const auto& h : hs) out[h.header().key()] = h.header().value();
  return out;
}

std::map<std::string, std::string> header_map(const agent::Answer& a) {
  return {a.headers.begin(), a.headers.end()};
}

// A server on 127.0.0.1:0 with an Authorizer, and clients for it.
struct Fixture {
  agent::Authorizer authorizer;
  agent::GrpcServer server;
  int port = 0;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<auth::Authorization::Stub> stub;

  explicit Fixture(bool with_table = true, agent::GrpcServerOptions options = {}) {
    if (with_table) authorizer.activate(mk_table());
    auto p = server.start("127.0.0.1:0", authorizer, std::move(options));
    if (!p.ok()) FAIL(p.error().message);
    port = *p;
    channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                  grpc::InsecureChannelCredentials());
    stub = auth::Authorization::NewStub(channel);
  }

  static void deadline(grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  }

  auth::CheckResponse check(const auth::CheckRequest& req) {
    grpc::ClientContext ctx;
    deadline(ctx);
    auth::CheckResponse resp;
    const grpc::Status st = stub->Check(&ctx, req, &resp);
    if (!st.ok()) FAIL("Check failed: " << st.error_code() << " " << st.error_message());
    return resp;
  }

  // Check with the request as raw bytes; the status and the response bytes.
  std::pair<grpc::Status, std::string> check_bytes(const std::string& bytes) {
    grpc::GenericStub generic(channel);
    grpc::ClientContext ctx;
    deadline(ctx);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1), response;
    grpc::CompletionQueue cq;
    auto call = generic.PrepareUnaryCall(&ctx, kCheckMethod, request, &cq);
    call->StartCall();
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    REQUIRE(cq.Next(&tag, &ok));
    std::vector<grpc::Slice> slices;
    std::string out;
    if (status.ok() && response.Dump(&slices).ok()) {
      for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    return {status, out};
  }

  health::HealthCheckResponse::ServingStatus health(const std::string& service,
                                                    grpc::StatusCode expect = grpc::OK) {
    auto h = health::Health::NewStub(channel);
    grpc::ClientContext ctx;
    deadline(ctx);
    health::HealthCheckRequest req;
    req.set_service(service);
    health::HealthCheckResponse resp;
    const grpc::Status st = h->Check(&ctx, req, &resp);
    CHECK(st.error_code() == expect);
    return resp.status();
  }

  // The server still decides: an allowed request is allowed.
  void still_answers();
};

std::string reason_of(const auth::CheckResponse& r) {
  return header_map(r.denied_response().headers())["X-Tollgate-Reason"];
}

// A plain TCP client for bytes no gRPC library would send.
class RawSocket {
 public:
  explicit RawSocket(int port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~RawSocket() { ::close(fd_); }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  void send(const std::string& bytes) {
    // The server may close before everything is written; that is an answer too.
    (void)::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  }

  // Reads until `done(bytes so far)` says enough, the peer closes, or 30 s pass.
  std::string read_until(const std::function<bool(const std::string&)>& done) {
    std::string in;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!done(in) && std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      in.append(buf, static_cast<std::size_t>(n));
    }
    return in;
  }
  bool closed() const { return closed_; }

 private:
  int fd_;
  bool closed_ = false;
};

struct Frame {
  std::uint8_t type = 0, flags = 0;
  std::uint32_t stream = 0;
  std::string payload;
};

std::string h2_frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream,
                     const std::string& payload) {
  std::string f;
  const auto n = static_cast<std::uint32_t>(payload.size());
  f += static_cast<char>(n >> 16);
  f += static_cast<char>(n >> 8);
  f += static_cast<char>(n);
  f += static_cast<char>(type);
  f += static_cast<char>(flags);
  for (int shift : {24, 16, 8, 0}) f += static_cast<char>((stream >> shift) & 0xff);
  return f + payload;
}

std::vector<Frame> h2_frames(const std::string& in) {
  std::vector<Frame> out;
  std::size_t i = 0;
  auto byte = [&](std::size_t k) { return static_cast<std::uint8_t>(in[k]); };
  while (i + 9 <= in.size()) {
    const std::size_t n =
        (std::size_t{byte(i)} << 16) | (std::size_t{byte(i + 1)} << 8) | byte(i + 2);
    if (i + 9 + n > in.size()) break;
    Frame f;
    f.type = byte(i + 3);
    f.flags = byte(i + 4);
    f.stream = ((std::uint32_t{byte(i + 5)} & 0x7f) << 24) | (std::uint32_t{byte(i + 6)} << 16) |
               (std::uint32_t{byte(i + 7)} << 8) | byte(i + 8);
    f.payload = in.substr(i + 9, n);
    out.push_back(std::move(f));
    i += 9 + n;
  }
  return out;
}

// HPACK "literal header field without indexing, new name", no Huffman (names < 127 bytes).
std::string hpack_literal(const std::string& name, const std::string& value) {
  return std::string(1, '\0') + static_cast<char>(name.size()) + name +
         static_cast<char>(value.size()) + value;
}

constexpr std::uint8_t kData = 0, kHeaders = 1, kRstStream = 3, kGoaway = 7;

// Opens stream 1 for Check and sends `message` (gRPC framing included) as its only DATA.
std::string h2_check_call(const std::string& grpc_message) {
  std::string block =
      hpack_literal(":method", "POST") + hpack_literal(":scheme", "http") +
      hpack_literal(":path", kCheckMethod) + hpack_literal(":authority", "127.0.0.1") +
      hpack_literal("content-type", "application/grpc") + hpack_literal("te", "trailers");
  return std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + h2_frame(4, 0, 0, "") +
         h2_frame(kHeaders, 0x4, 1, block) + h2_frame(kData, 0x1, 1, grpc_message);
}

std::string grpc_length_prefix(std::uint32_t n, std::uint8_t compressed = 0) {
  std::string p(1, static_cast<char>(compressed));
  for (int shift : {24, 16, 8, 0}) p += static_cast<char>((n >> shift) & 0xff);
  return p;
}

// How stream 1 ended: whether the server ended it (trailers, reset, goaway or closing the
// connection), and the CheckResponse it sent on it, if any.
struct StreamOutcome {
  bool ended = false;
  std::optional<auth::CheckResponse> response;
};

StreamOutcome h2_outcome(RawSocket& s) {
  StreamOutcome o;
  const std::string in = s.read_until([&](const std::string& so_far) {
    for (const Frame& f : h2_frames(so_far)) {
      if ((f.stream == 1 && f.type == kHeaders && (f.flags & 0x1)) ||
          (f.stream == 1 && f.type == kRstStream) || f.type == kGoaway) {
        o.ended = true;
      }
    }
    return o.ended;
  });
  o.ended = o.ended || s.closed();
  std::string message;
  for (const Frame& f : h2_frames(in)) {
    UNSCOPED_INFO("frame type " << int{f.type} << " flags " << int{f.flags} << " stream "
                                << f.stream << " " << f.payload.size() << " bytes");
    if (f.stream == 1 && f.type == kData) message += f.payload;
  }
  if (message.size() > 5) {
    o.response.emplace();
    REQUIRE(o.response->ParseFromString(message.substr(5)));
  }
  return o;
}

// The request Fixture::still_answers sends, which the table allows.
auth::CheckRequest allowed_check() {
  auto c = testing::mk_http_check("GET", "/api/x");
  testing::mk_peer(*c.mutable_attributes()->mutable_source(),
                   "spiffe://cluster.local/ns/default/sa/frontend", "10.0.0.7");
  return c;
}

void Fixture::still_answers() { CHECK(check(allowed_check()).status().code() == 0); }

}  // namespace

TEST_CASE("generated requests are decided through gRPC exactly as the same request in JSON") {
  Fixture fx;
  std::mt19937 rng(20240611);
  int allowed = 0, denied = 0, tcp = 0, jwt_allowed = 0;
  std::set<std::string> deciders;
  constexpr int kRequests = 600;
  for (int i = 0; i < kRequests; ++i) {
    const Spec s = mk_spec(rng);
    const json j = spec_json(s);
    INFO("request " << i << ": " << j.dump());
    const agent::Answer expected = fx.authorizer.decide(testing::mk_request(j.dump()));
    const auth::CheckResponse got = fx.check(spec_check(s));
    REQUIRE(got.status().code() == (expected.allowed ? 0 : 7));
    if (expected.allowed) {
      REQUIRE(got.has_ok_response());
      CHECK(header_map(got.ok_response().headers()) == header_map(expected));
      ++allowed;
      if (expected.policy == "default/allow-jwt") ++jwt_allowed;
    } else {
      REQUIRE(got.has_denied_response());
      CHECK(got.denied_response().body() == expected.body);
      auto headers = header_map(got.denied_response().headers());
      headers.erase("Content-Type");
      CHECK(headers == header_map(expected));
      ++denied;
    }
    deciders.insert(expected.policy + "#" + std::to_string(expected.rule));
    if (s.tcp) ++tcp;
  }
  // The generator reaches every part of the table, so a wrong mapping shows.
  CHECK(allowed > kRequests / 8);
  CHECK(denied > kRequests / 8);
  CHECK(tcp > kRequests / 10);
  CHECK(jwt_allowed > 5);
  CHECK(deciders.size() >= 9);
}

TEST_CASE("without a table every Check is PERMISSION_DENIED with reason no-table, and completes") {
  Fixture fx(false);
  const auto r = fx.check(testing::mk_http_check("GET", "/api/x"));
  CHECK(r.status().code() == 7);
  CHECK(r.denied_response().status().code() == envoy::type::v3::Forbidden);
  CHECK(reason_of(r) == "no-table");
  CHECK(json::parse(r.denied_response().body())["decision"] == "DENY");
  fx.authorizer.activate(mk_table());
  fx.still_answers();
}

TEST_CASE("health is SERVING only while the authorizer has a table") {
  Fixture fx(false);
  CHECK(fx.health("") == health::HealthCheckResponse::NOT_SERVING);
  CHECK(fx.health("envoy.service.auth.v3.Authorization") ==
        health::HealthCheckResponse::NOT_SERVING);
  fx.authorizer.activate(mk_table());
  CHECK(fx.health("") == health::HealthCheckResponse::SERVING);
  CHECK(fx.health("envoy.service.auth.v3.Authorization") == health::HealthCheckResponse::SERVING);
  fx.health("some.other.Service", grpc::StatusCode::NOT_FOUND);
  fx.authorizer.activate(nullptr);
  CHECK(fx.health("") == health::HealthCheckResponse::NOT_SERVING);
}

TEST_CASE("a CheckRequest without attributes is PERMISSION_DENIED as unreadable") {
  Fixture fx;
  const auto r = fx.check(auth::CheckRequest());
  CHECK(r.status().code() == 7);
  CHECK(reason_of(r) == "unreadable-request");
  CHECK_THAT(r.denied_response().body(), Catch::Contains("attributes: missing"));
  fx.still_answers();
}

TEST_CASE("a 10,000-entry headers map is PERMISSION_DENIED, and the server answers the next call") {
  Fixture fx;
  std::vector<std::pair<std::string, std::string>> hs;
  for (int i = 0; i < 10000; ++i) hs.emplace_back("x-h" + std::to_string(i), "v");
  auto c = testing::mk_http_check("GET", "/api/x", "", hs);
  testing::mk_peer(*c.mutable_attributes()->mutable_source(),
                   "spiffe://cluster.local/ns/default/sa/frontend", "10.0.0.7");
  const auto r = fx.check(c);
  CHECK(r.status().code() == 7);
  CHECK(reason_of(r) == "unreadable-request");
  fx.still_answers();
}

TEST_CASE("unknown fields anywhere in a CheckRequest are skipped and the request decided") {
  Fixture fx;
  auto c = testing::mk_http_check("GET", "/api/x");
  testing::mk_peer(*c.mutable_attributes()->mutable_source(),
                   "spiffe://cluster.local/ns/default/sa/frontend", "10.0.0.7");
  // Fields Envoy sends that the agent's protos leave out, and fields nobody defines yet:
  // attributes.context_extensions (10) {"k": "v"}, request.time (1), http.id (1), http.size
  // (9), and numbers 99 (varint) and 100 (bytes) at the top.
  auto* unknown =
      c.mutable_attributes()->GetReflection()->MutableUnknownFields(c.mutable_attributes());
  unknown->AddLengthDelimited(10, std::string("\x0a\x01k\x12\x01v", 6));
  c.mutable_attributes()
      ->mutable_request()
      ->GetReflection()
      ->MutableUnknownFields(c.mutable_attributes()->mutable_request())
      ->AddLengthDelimited(1, std::string("\x08\x01", 2));
  auto* http = c.mutable_attributes()->mutable_request()->mutable_http();
  http->GetReflection()->MutableUnknownFields(http)->AddLengthDelimited(1, "request-id");
  http->GetReflection()->MutableUnknownFields(http)->AddVarint(9, 1234);
  c.GetReflection()->MutableUnknownFields(&c)->AddVarint(99, 7);
  c.GetReflection()->MutableUnknownFields(&c)->AddLengthDelimited(100, "future");
  const auto [status, bytes] = fx.check_bytes(c.SerializeAsString());
  REQUIRE(status.ok());
  auth::CheckResponse r;
  REQUIRE(r.ParseFromString(bytes));
  CHECK(r.status().code() == 0);
  CHECK(header_map(r.ok_response().headers())["X-Tollgate-Policy"] == "default/allow-frontend");
}

TEST_CASE("a header that is not UTF-8 is decided like any other, not turned into an error") {
  Fixture fx;
  auto c = testing::mk_http_check("GET", "/api/x", "", {{"x-latin1", "caf\xe9"}});
  testing::mk_peer(*c.mutable_attributes()->mutable_source(),
                   "spiffe://cluster.local/ns/default/sa/frontend", "10.0.0.7");
  CHECK(fx.check(c).status().code() == 0);
  c = testing::mk_http_check("GET", "/api/x", "", {{"x-token", "bad"}, {"x-latin1", "\xff"}});
  CHECK(reason_of(fx.check(c)).empty());  // denied by deny-remote, not refused
  CHECK(header_map(fx.check(c).denied_response().headers())["X-Tollgate-Policy"] ==
        "default/deny-remote");
}

TEST_CASE("bytes that are not a CheckRequest are PERMISSION_DENIED, completed with status OK") {
  Fixture fx;
  // A length-delimited field 1 longer than the message: protobuf cannot parse it.
  const auto [status, bytes] = fx.check_bytes(std::string("\x0a\x7f\x01\x02", 4));
  REQUIRE(status.ok());
  auth::CheckResponse r;
  REQUIRE(r.ParseFromString(bytes));
  CHECK(r.status().code() == 7);
  CHECK(reason_of(r) == "unreadable-request");
  CHECK_THAT(r.denied_response().body(), Catch::Contains("not a CheckRequest protobuf"));
  fx.still_answers();
}

TEST_CASE("metadata nested deeper than protobuf parses is PERMISSION_DENIED, not an error") {
  Fixture fx;
  json deep = "leaf";
  for (int i = 0; i < 150; ++i) deep = json{{"k", deep}};
  auto c = allowed_check();
  testing::mk_metadata(c, kExample, deep);
  const auto [status, bytes] = fx.check_bytes(c.SerializeAsString());
  REQUIRE(status.ok());
  auth::CheckResponse r;
  REQUIRE(r.ParseFromString(bytes));
  CHECK(r.status().code() == 7);
  CHECK(reason_of(r) == "unreadable-request");
  fx.still_answers();
}

TEST_CASE("a message above the receive limit is RESOURCE_EXHAUSTED, and the server goes on") {
  agent::GrpcServerOptions o;
  o.max_receive_message_bytes = 64 * 1024;
  Fixture fx(true, o);
  auto c = testing::mk_http_check("GET", "/api/x", "", {{"x-big", std::string(100000, 'a')}});
  const auto [status, bytes] = fx.check_bytes(c.SerializeAsString());
  CHECK(status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  fx.still_answers();
}

TEST_CASE("raw bytes that are not HTTP/2 close the connection, and the server goes on") {
  Fixture fx;
  std::mt19937 rng(7);
  std::string garbage(4096, '\0');
  for (char& ch : garbage) ch = static_cast<char>(rng());
  {
    RawSocket s(fx.port);
    s.send(garbage);
    s.read_until([](const std::string&) { return false; });
    CHECK(s.closed());
  }
  {
    RawSocket s(fx.port);  // a valid preface, then garbage frames
    s.send(std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + garbage);
    s.read_until([](const std::string&) { return false; });
    CHECK(s.closed());
  }
  fx.still_answers();
}

TEST_CASE(
    "a truncated gRPC frame is never decided as the request it cuts, and the server goes on") {
  Fixture fx;
  const std::string message = allowed_check().SerializeAsString();
  const auto n = static_cast<std::uint32_t>(message.size());
  // grpc++ fails the call itself (INTERNAL, before the agent sees a message): the stream ends
  // with no CheckResponse, and no decision can come out of a message cut short.
  auto check_refused = [](const StreamOutcome& o) {
    CHECK(o.ended);
    CHECK_FALSE(o.response);
  };
  {
    // The length prefix says 100 bytes more than come before the stream ends.
    RawSocket s(fx.port);
    s.send(h2_check_call(grpc_length_prefix(n + 100) + message));
    check_refused(h2_outcome(s));
  }
  {
    // The message cut in half.
    RawSocket s(fx.port);
    s.send(h2_check_call(grpc_length_prefix(n) + message.substr(0, n / 2)));
    check_refused(h2_outcome(s));
  }
  {
    // Four bytes of a five-byte prefix.
    RawSocket s(fx.port);
    s.send(h2_check_call(grpc_length_prefix(n).substr(0, 4)));
    check_refused(h2_outcome(s));
  }
  {
    // The stream ends without any message.
    RawSocket s(fx.port);
    s.send(h2_check_call(""));
    check_refused(h2_outcome(s));
  }
  {
    // The complete message, as a control: the same bytes framed right are allowed.
    RawSocket s(fx.port);
    s.send(h2_check_call(grpc_length_prefix(n) + message));
    const StreamOutcome o = h2_outcome(s);
    REQUIRE(o.response);
    CHECK(o.response->status().code() == 0);
  }
  fx.still_answers();
}

TEST_CASE("the decision hook sees every decided request with its answer, and refusals as null") {
  struct Seen {
    std::mutex mu;
    std::vector<std::pair<bool, bool>> calls;  // (request given, allowed)
    std::chrono::nanoseconds longest{0};
  } seen;
  agent::GrpcServerOptions o;
  o.on_decision = [&](const eval::Request* r, const agent::Answer& a, std::chrono::nanoseconds d) {
    std::lock_guard lock(seen.mu);
    seen.calls.emplace_back(r != nullptr, a.allowed);
    seen.longest = std::max(seen.longest, d);
    if (r != nullptr && r->method == "THROW") throw std::runtime_error("a hook that throws");
  };
  Fixture fx(true, o);
  fx.still_answers();
  CHECK(fx.check(auth::CheckRequest()).status().code() == 7);
  CHECK(fx.check(testing::mk_http_check("THROW", "/api/x")).status().code() == 7);
  std::lock_guard lock(seen.mu);
  CHECK(seen.calls ==
        std::vector<std::pair<bool, bool>>{{true, true}, {false, false}, {true, false}});
  CHECK(seen.longest > std::chrono::nanoseconds(0));
}

TEST_CASE("with a self provider, the CUSTOM policy routing to the agent is decided by the rest") {
  // The CUSTOM policy of examples/agent/istio-ext-authz-grpc.yaml, which routes the
  // workload's requests to provider "tollgate", and a DENY policy.
  std::ifstream in(std::string(TOLLGATE_SOURCE_DIR) + "/examples/agent/istio-ext-authz-grpc.yaml");
  const std::string example((std::istreambuf_iterator<char>(in)), {});
  auto docs = policy::parse_documents(example, "istio-ext-authz-grpc.yaml");
  REQUIRE(docs.ok());
  auto policies = testing::mk_policies(R"(
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin*"]}}]}]}
)");
  for (const auto& d : *docs) {
    if (policy::is_authorization_policy(d.object))
      policies.push_back(policy::parse_policy(d.object));
  }
  REQUIRE(policies.size() == 2);
  policy::MeshConfig mesh;
  mesh.extension_providers.push_back({"tollgate", "grpc"});
  auto table = std::make_shared<agent::ActiveTable>();
  table->table =
      compile::compile_table(policies, testing::mk_workload("default", {{"app", "backend"}}), mesh);
  for (const bool self : {false, true}) {
    agent::GrpcServerOptions o;
    if (self) o.mapping.self_provider = "tollgate";
    Fixture fx(false, o);
    fx.authorizer.activate(table);
    const auto ok = fx.check(testing::mk_http_check("GET", "/x"));
    const auto admin = fx.check(testing::mk_http_check("GET", "/admin"));
    INFO("self provider: " << self);
    CHECK(ok.status().code() == (self ? 0 : 7));  // without it, a CUSTOM rule with no answer
    CHECK(admin.status().code() == 7);
    CHECK(header_map(admin.denied_response().headers())["X-Tollgate-Policy"] ==
          (self ? "default/deny-admin" : "default/route-to-tollgate"));
  }
}

TEST_CASE("start refuses a port in use and a bad address; stop ends serving and may be repeated") {
  Fixture fx;
  agent::Authorizer other;
  agent::GrpcServer second;
  auto r = second.start("127.0.0.1:" + std::to_string(fx.port), other, {});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("cannot listen on 127.0.0.1:"));
  r = second.start("nonsense", other, {});
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("is not ADDRESS:PORT"));
  CHECK_FALSE(fx.server.start("127.0.0.1:0", other, {}).ok());  // already started

  fx.server.stop();
  fx.server.stop();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auth::CheckResponse resp;
  CHECK(fx.stub->Check(&ctx, auth::CheckRequest(), &resp).error_code() ==
        grpc::StatusCode::UNAVAILABLE);
  // And it can serve again.
  REQUIRE(fx.server.start("127.0.0.1:0", fx.authorizer, {}).ok());
}
