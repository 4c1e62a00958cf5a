#include "tollgate/k8s/config.h"

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>

#include "support/run.h"
#include "tollgate/util/base64.h"

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using Catch::Contains;
using k8s::ClusterConfig;
using k8s::load_kubeconfig;
using testing::TempDir;
using testing::write_file;

const char* kCaPem = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
const char* kCertPem = "-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n";
const char* kKeyPem = "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n";

// A small independent encoder, so decoding is checked against something.
std::string b64(const std::string& in) { return util::encode_base64(in); }

// Sets (or unsets, with nullopt) an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string one_context(const std::string& cluster_body, const std::string& user_body) {
  return "apiVersion: v1\nkind: Config\ncurrent-context: main\n"
         "clusters:\n- name: c1\n  cluster:\n" +
         cluster_body + "users:\n- name: u1\n  user:\n" + user_body +
         "contexts:\n- name: main\n  context: {cluster: c1, user: u1, namespace: team-a}\n";
}

TEST_CASE("a kubeconfig with inline CA, client certificate and key data loads them decoded") {
  TempDir dir;
  const auto file = (dir.path() / "config").string();
  write_file(file, one_context("    server: https://10.0.0.1:6443\n"
                               "    certificate-authority-data: " +
                                   b64(kCaPem) + "\n",
                               "    client-certificate-data: " + b64(kCertPem) +
                                   "\n"
                                   "    client-key-data: " +
                                   b64(kKeyPem) + "\n"));
  auto c = load_kubeconfig(file);
  REQUIRE(c.ok());
  CHECK(c->server == "https://10.0.0.1:6443");
  CHECK(c->scheme == "https");
  CHECK(c->host == "10.0.0.1");
  CHECK(c->port == "6443");
  CHECK(c->base_path.empty());
  CHECK(c->ca_pem == kCaPem);
  CHECK(c->client_cert_pem == kCertPem);
  CHECK(c->client_key_pem == kKeyPem);
  CHECK(c->token.empty());
  CHECK(c->namespace_ == "team-a");
  CHECK(c->description == "kubeconfig " + file + " context \"main\"");
  CHECK_FALSE(c->insecure_skip_tls_verify);
}

TEST_CASE("file paths inside a kubeconfig are relative to the kubeconfig's directory") {
  TempDir dir;
  std::filesystem::create_directories(dir.path() / "kube" / "pki");
  write_file(dir.path() / "kube" / "pki" / "ca.crt", kCaPem);
  write_file(dir.path() / "kube" / "client.crt", kCertPem);
  write_file(dir.path() / "client.key", kKeyPem);  // absolute path below
  const auto file = (dir.path() / "kube" / "config").string();
  write_file(file, one_context("    server: https://api.example.com\n"
                               "    certificate-authority: pki/ca.crt\n",
                               "    client-certificate: client.crt\n"
                               "    client-key: " +
                                   (dir.path() / "client.key").string() + "\n"));
  auto c = load_kubeconfig(file);
  REQUIRE(c.ok());
  CHECK(c->ca_pem == kCaPem);
  CHECK(c->client_cert_pem == kCertPem);
  CHECK(c->client_key_pem == kKeyPem);
  CHECK(c->port == "443");

  std::filesystem::remove(dir.path() / "kube" / "pki" / "ca.crt");
  auto missing = load_kubeconfig(file);
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(missing.error().message,
             Contains(file + ": clusters[0].cluster.certificate-authority"));
  CHECK_THAT(missing.error().message, Contains("pki/ca.crt"));
}

TEST_CASE("a static token and a token file are both taken from the user") {
  TempDir dir;
  write_file(dir.path() / "tok", "file-token\n");
  const auto file = (dir.path() / "config").string();
  write_file(file, one_context("    server: https://h:1\n",
                               "    token: static-token\n    tokenFile: tok\n"));
  auto c = load_kubeconfig(file);
  REQUIRE(c.ok());
  CHECK(c->token == "static-token");
  CHECK(c->token_file == (dir.path() / "tok").string());
  k8s::TokenSource source(*c, 0ms);
  CHECK(source.token() == "file-token");

  std::filesystem::remove(dir.path() / "tok");
  auto gone = load_kubeconfig(file);
  REQUIRE_FALSE(gone.ok());
  CHECK_THAT(gone.error().message, Contains("users[0].user.tokenFile"));
}

TEST_CASE("the current context is used unless a context is named") {
  TempDir dir;
  const auto file = (dir.path() / "config").string();
  write_file(file, R"(current-context: prod
clusters:
- {name: prod, cluster: {server: "https://prod:6443"}}
- {name: dev, cluster: {server: "http://dev"}}
users:
- {name: prod-user, user: {token: prod-token}}
- {name: dev-user, user: {token: dev-token}}
contexts:
- {name: prod, context: {cluster: prod, user: prod-user}}
- {name: dev, context: {cluster: dev, user: dev-user, namespace: sandbox}}
)");
  auto cur = load_kubeconfig(file);
  REQUIRE(cur.ok());
  CHECK(cur->host == "prod");
  CHECK(cur->token == "prod-token");
  CHECK(cur->namespace_ == "default");
  auto dev = load_kubeconfig(file, "dev");
  REQUIRE(dev.ok());
  CHECK(dev->host == "dev");
  CHECK(dev->scheme == "http");
  CHECK(dev->port == "80");
  CHECK(dev->token == "dev-token");
  CHECK(dev->namespace_ == "sandbox");
  CHECK(dev->description == "kubeconfig " + file + " context \"dev\"");
}

TEST_CASE("a ':'-separated list is merged with the first definition of each name winning") {
  TempDir dir;
  const auto a = (dir.path() / "a").string();
  const auto b = (dir.path() / "b").string();
  write_file(a, R"(clusters:
- {name: shared, cluster: {server: "https://from-a"}}
users:
- {name: shared-user, user: {token: token-a}}
contexts:
- {name: ctx-a, context: {cluster: shared, user: shared-user}}
)");
  write_file(b, R"(current-context: ctx-b
clusters:
- {name: shared, cluster: {server: "https://from-b"}}
- {name: only-b, cluster: {server: "https://only-b"}}
users:
- {name: shared-user, user: {token: token-b}}
contexts:
- {name: ctx-b, context: {cluster: only-b, user: shared-user}}
- {name: ctx-a, context: {cluster: only-b, user: shared-user}}
)");
  // current-context comes from b (a does not set it); user shared-user comes from a.
  auto merged = load_kubeconfig(a + ":" + b);
  REQUIRE(merged.ok());
  CHECK(merged->host == "only-b");
  CHECK(merged->token == "token-a");
  // ctx-a is a's, which points at cluster shared, also a's.
  auto ctx_a = load_kubeconfig(a + ":" + b, "ctx-a");
  REQUIRE(ctx_a.ok());
  CHECK(ctx_a->host == "from-a");
  // The other order: b's definitions win.
  auto reversed = load_kubeconfig(b + ":" + a, "ctx-a");
  REQUIRE(reversed.ok());
  CHECK(reversed->host == "only-b");
  CHECK(reversed->token == "token-b");
  // A file of the list that does not exist is skipped, as kubectl does; a single one is not.
  CHECK(load_kubeconfig(a + ":" + (dir.path() / "nope").string() + ":" + b).ok());
  auto single = load_kubeconfig((dir.path() / "nope").string());
  REQUIRE_FALSE(single.ok());
  CHECK_THAT(single.error().message, Contains((dir.path() / "nope").string()));
}

TEST_CASE("a missing context, cluster or user is an error naming it") {
  TempDir dir;
  const auto file = (dir.path() / "config").string();
  write_file(file, R"(current-context: ghost
clusters:
- {name: c, cluster: {server: "https://h"}}
users:
- {name: u, user: {token: t}}
contexts:
- {name: no-cluster, context: {cluster: nowhere, user: u}}
- {name: no-user, context: {cluster: c, user: nobody}}
- {name: ok, context: {cluster: c, user: u}}
)");
  auto cur = load_kubeconfig(file);
  REQUIRE_FALSE(cur.ok());
  CHECK_THAT(cur.error().message, Contains(file + ": current-context"));
  CHECK_THAT(cur.error().message, Contains("\"ghost\" not found"));
  auto named = load_kubeconfig(file, "absent");
  REQUIRE_FALSE(named.ok());
  CHECK_THAT(named.error().message, Contains("context \"absent\" not found"));
  auto cluster = load_kubeconfig(file, "no-cluster");
  REQUIRE_FALSE(cluster.ok());
  CHECK_THAT(cluster.error().message,
             Contains(file + ": contexts[0].context.cluster: cluster \"nowhere\" not found"));
  auto user = load_kubeconfig(file, "no-user");
  REQUIRE_FALSE(user.ok());
  CHECK_THAT(user.error().message,
             Contains(file + ": contexts[1].context.user: user \"nobody\" not found"));
  CHECK(load_kubeconfig(file, "ok").ok());

  write_file(file, "clusters: []\n");
  auto none = load_kubeconfig(file);
  REQUIRE_FALSE(none.ok());
  CHECK_THAT(none.error().message, Contains("current-context is not set"));
}

TEST_CASE("exec and auth-provider users are rejected with an error naming the user") {
  TempDir dir;
  const auto file = (dir.path() / "config").string();
  write_file(file, one_context("    server: https://h\n",
                               "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n"
                               "      command: aws\n"));
  auto exec = load_kubeconfig(file);
  REQUIRE_FALSE(exec.ok());
  CHECK_THAT(exec.error().message, Contains(file + ": users[0].user.exec"));
  CHECK_THAT(exec.error().message, Contains("not supported"));
  CHECK_THAT(exec.error().message, Contains("user \"u1\""));

  write_file(file, one_context("    server: https://h\n", "    auth-provider: {name: gcp}\n"));
  auto ap = load_kubeconfig(file);
  REQUIRE_FALSE(ap.ok());
  CHECK_THAT(ap.error().message, Contains("users[0].user.auth-provider"));
  CHECK_THAT(ap.error().message, Contains("not supported"));
  CHECK_THAT(ap.error().message, Contains("user \"u1\""));
}

TEST_CASE("bad base64 in a data field is an error naming the file and field") {
  TempDir dir;
  const auto file = (dir.path() / "config").string();
  write_file(
      file, one_context("    server: https://h\n", "    client-certificate-data: " + b64(kCertPem) +
                                                       "\n    client-key-data: 'not*base64!'\n"));
  auto c = load_kubeconfig(file);
  REQUIRE_FALSE(c.ok());
  CHECK_THAT(c.error().message,
             Contains(file + ": users[0].user.client-key-data: not valid base64"));

  write_file(file, one_context("    server: https://h\n    certificate-authority-data: QUJD=\n",
                               "    token: t\n"));
  CHECK_FALSE(load_kubeconfig(file).ok());
}

TEST_CASE("server URLs are split into scheme, host, port and base path") {
  auto parse = [](const std::string& s) {
    ClusterConfig c;
    c.server = s;
    return k8s::parse_server(c);
  };
  auto v6 = parse("https://[fd00::1]:6443");
  REQUIRE(v6.ok());
  CHECK(v6->host == "fd00::1");
  CHECK(v6->port == "6443");
  CHECK(v6->server == "https://[fd00::1]:6443");
  auto v6_default = parse("https://[::1]");
  REQUIRE(v6_default.ok());
  CHECK(v6_default->host == "::1");
  CHECK(v6_default->port == "443");

  auto rancher = parse("https://rancher.example.com/k8s/clusters/c-1/");
  REQUIRE(rancher.ok());
  CHECK(rancher->host == "rancher.example.com");
  CHECK(rancher->port == "443");
  CHECK(rancher->base_path == "/k8s/clusters/c-1");
  auto upper = parse("HTTPS://h:8443/");
  REQUIRE(upper.ok());
  CHECK(upper->scheme == "https");
  CHECK(upper->base_path.empty());

  auto ftp = parse("ftp://h");
  REQUIRE_FALSE(ftp.ok());
  CHECK_THAT(ftp.error().message, Contains("scheme \"ftp\""));
  auto bare = parse("10.0.0.1:6443");
  REQUIRE_FALSE(bare.ok());
  CHECK_THAT(bare.error().message, Contains("no scheme"));
  auto unbracketed = parse("https://fd00::1:6443");
  REQUIRE_FALSE(unbracketed.ok());
  CHECK_THAT(unbracketed.error().message, Contains("brackets"));
  auto port = parse("https://h:99999");
  REQUIRE_FALSE(port.ok());
  CHECK_THAT(port.error().message, Contains("port \"99999\""));
  CHECK_FALSE(parse("https://h:").ok());
  CHECK_FALSE(parse("https://").ok());
  CHECK_FALSE(parse("https://user:pw@h").ok());
  CHECK_FALSE(parse("https://h/?x=1").ok());
  CHECK_FALSE(parse("https://[fd00::1").ok());

  TempDir dir;
  const auto file = (dir.path() / "config").string();
  write_file(file, one_context("    server: ftp://h\n", "    token: t\n"));
  auto in_file = load_kubeconfig(file);
  REQUIRE_FALSE(in_file.ok());
  CHECK_THAT(in_file.error().message, Contains(file + ": clusters[0].cluster.server:"));
}

TEST_CASE("insecure-skip-tls-verify and tls-server-name are read, and insecure still loads") {
  TempDir dir;
  const auto file = (dir.path() / "config").string();
  write_file(file, one_context("    server: https://h\n    insecure-skip-tls-verify: true\n"
                               "    tls-server-name: kubernetes.default\n",
                               "    token: t\n"));
  auto c = load_kubeconfig(file);
  REQUIRE(c.ok());
  CHECK(c->insecure_skip_tls_verify);
  CHECK(c->tls_server_name == "kubernetes.default");
  CHECK(c->ca_pem.empty());
}

TEST_CASE("in-cluster configuration comes from the service environment and account files") {
  TempDir dir;
  write_file(dir.path() / "ca.crt", kCaPem);
  write_file(dir.path() / "token", "sa-token\n");
  write_file(dir.path() / "namespace", "tollgate-system");
  {
    ScopedEnv host("KUBERNETES_SERVICE_HOST", "10.96.0.1");
    ScopedEnv port("KUBERNETES_SERVICE_PORT", "443");
    auto c = k8s::in_cluster_config(dir.path().string());
    REQUIRE(c.ok());
    CHECK(c->server == "https://10.96.0.1:443");
    CHECK(c->host == "10.96.0.1");
    CHECK(c->port == "443");
    CHECK(c->ca_pem == kCaPem);
    CHECK(c->token_file == (dir.path() / "token").string());
    CHECK(c->namespace_ == "tollgate-system");
    CHECK(c->description == "in-cluster");
    k8s::TokenSource source(*c, 0ms);
    CHECK(source.token() == "sa-token");
  }
  {
    ScopedEnv host("KUBERNETES_SERVICE_HOST", "fd00:10:96::1");
    ScopedEnv port("KUBERNETES_SERVICE_PORT", "6443");
    auto c = k8s::in_cluster_config(dir.path().string());
    REQUIRE(c.ok());
    CHECK(c->server == "https://[fd00:10:96::1]:6443");
    CHECK(c->host == "fd00:10:96::1");
  }
  {
    ScopedEnv host("KUBERNETES_SERVICE_HOST", std::nullopt);
    ScopedEnv port("KUBERNETES_SERVICE_PORT", "443");
    auto c = k8s::in_cluster_config(dir.path().string());
    REQUIRE_FALSE(c.ok());
    CHECK_THAT(c.error().message, Contains("KUBERNETES_SERVICE_HOST"));
  }
  {
    ScopedEnv host("KUBERNETES_SERVICE_HOST", "10.96.0.1");
    ScopedEnv port("KUBERNETES_SERVICE_PORT", "443");
    std::filesystem::remove(dir.path() / "token");
    auto no_token = k8s::in_cluster_config(dir.path().string());
    REQUIRE_FALSE(no_token.ok());
    CHECK_THAT(no_token.error().message, Contains((dir.path() / "token").string()));
    std::filesystem::remove(dir.path() / "ca.crt");
    auto no_ca = k8s::in_cluster_config(dir.path().string());
    REQUIRE_FALSE(no_ca.ok());
    CHECK_THAT(no_ca.error().message, Contains((dir.path() / "ca.crt").string()));
  }
}

TEST_CASE("resolve_config prefers the flag, then $KUBECONFIG, then in-cluster, then ~/.kube") {
  TempDir dir;
  const auto flag_file = (dir.path() / "flag").string();
  const auto env_file = (dir.path() / "env").string();
  write_file(flag_file, one_context("    server: https://from-flag\n", "    token: t\n"));
  write_file(env_file, one_context("    server: https://from-env\n", "    token: t\n"));
  std::filesystem::create_directories(dir.path() / "home" / ".kube");
  write_file(dir.path() / "home" / ".kube" / "config",
             one_context("    server: https://from-home\n", "    token: t\n"));
  const auto sa = dir.path() / "sa";
  std::filesystem::create_directories(sa);
  write_file(sa / "ca.crt", kCaPem);
  write_file(sa / "token", "sa-token");

  ScopedEnv home("HOME", (dir.path() / "home").string());
  ScopedEnv kubeconfig("KUBECONFIG", env_file);
  ScopedEnv host("KUBERNETES_SERVICE_HOST", "10.96.0.1");
  ScopedEnv port("KUBERNETES_SERVICE_PORT", "443");

  auto flag = k8s::resolve_config(flag_file, sa.string());
  REQUIRE(flag.ok());
  CHECK(flag->host == "from-flag");
  auto env = k8s::resolve_config("", sa.string());
  REQUIRE(env.ok());
  CHECK(env->host == "from-env");
  {
    ScopedEnv unset("KUBECONFIG", std::nullopt);
    auto in_cluster = k8s::resolve_config("", sa.string());
    REQUIRE(in_cluster.ok());
    CHECK(in_cluster->description == "in-cluster");
    CHECK(in_cluster->host == "10.96.0.1");
    {
      ScopedEnv no_host("KUBERNETES_SERVICE_HOST", std::nullopt);
      auto home_config = k8s::resolve_config("", sa.string());
      REQUIRE(home_config.ok());
      CHECK(home_config->host == "from-home");
      std::filesystem::remove(dir.path() / "home" / ".kube" / "config");
      auto nothing = k8s::resolve_config("", sa.string());
      REQUIRE_FALSE(nothing.ok());
      CHECK_THAT(nothing.error().message, Contains("KUBECONFIG"));
      CHECK_THAT(nothing.error().message, Contains("KUBERNETES_SERVICE_HOST"));
      CHECK_THAT(nothing.error().message, Contains((dir.path() / "home/.kube/config").string()));
    }
  }
  auto bad_flag = k8s::resolve_config((dir.path() / "missing").string(), sa.string());
  REQUIRE_FALSE(bad_flag.ok());
  CHECK_THAT(bad_flag.error().message, Contains("--kubeconfig"));
  CHECK_THAT(bad_flag.error().message, Contains((dir.path() / "missing").string()));
}

TEST_CASE("a token source re-reads a rotated token file and keeps the last good token") {
  TempDir dir;
  const auto file = dir.path() / "token";
  write_file(file, "first-token\n");
  ClusterConfig c;
  c.token_file = file.string();
  k8s::TokenSource source(c, 0ms);
  CHECK(source.token() == "first-token");
  CHECK(source.last_error().empty());

  write_file(file, "  second-token-is-longer \n");  // a different size
  CHECK(source.token() == "second-token-is-longer");

  // Same size, different content: the modification time tells.
  write_file(file, "third-token-is-longer-1234");
  REQUIRE(std::filesystem::file_size(file) == 26);
  const auto later = std::filesystem::last_write_time(file) + 2s;
  std::filesystem::last_write_time(file, later);
  CHECK(source.token() == "third-token-is-longer-1234");

  std::filesystem::remove(file);
  CHECK(source.token() == "third-token-is-longer-1234");
  CHECK_THAT(source.last_error(), Contains(file.string()));

  write_file(file, "fourth");
  CHECK(source.token() == "fourth");
  CHECK(source.last_error().empty());
}

TEST_CASE("a token source does not look at the file again before the recheck interval") {
  TempDir dir;
  const auto file = dir.path() / "token";
  write_file(file, "old");
  ClusterConfig c;
  c.token_file = file.string();
  k8s::TokenSource source(c, std::chrono::hours(1));
  CHECK(source.token() == "old");
  write_file(file, "new-and-longer");
  CHECK(source.token() == "old");
}

TEST_CASE("a token source without a file returns the static token") {
  ClusterConfig c;
  c.token = "static";
  k8s::TokenSource source(c);
  CHECK(source.token() == "static");
  CHECK(k8s::TokenSource(ClusterConfig{}).token().empty());
}

TEST_CASE("redact never contains the token") {
  const std::string token = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkFCQyJ9.payload.signature";
  const std::string r = k8s::redact("Bearer " + token);
  CHECK(r == "Bearer <redacted, " + std::to_string(token.size()) + " bytes>");
  CHECK(r.find(token) == std::string::npos);
  CHECK(r.find("eyJ") == std::string::npos);
  const std::string raw = k8s::redact(token);
  CHECK(raw.find("eyJ") == std::string::npos);
  CHECK_THAT(raw, Contains("redacted"));
  // A first word that is not a known scheme may be part of a secret: not shown.
  CHECK(k8s::redact("secretpart rest").find("secretpart") == std::string::npos);
}

}  // namespace
}  // namespace tollgate
