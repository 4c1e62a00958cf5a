// The CLI as a user runs it: check and lint on manifest files, eval's contract.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>

#include "support/http_get.h"
#include "support/run.h"

using nlohmann::json;
using tollgate::testing::run_tollgate;
using tollgate::testing::source_path;

namespace {

const std::string kRequestGet =
    R"('{"protocol":"http","source":{"principal":"cluster.local/ns/default/sa/frontend"},)"
    R"("method":"GET","path":"/api/v1/data"}')";

// An ALLOW policy for path /a, with a request for /a.
const std::string kAllowA =
    R"({"policies":[{"kind":"AuthorizationPolicy","metadata":{"name":"a","namespace":"n"},)"
    R"("spec":{"rules":[{"to":[{"operation":{"paths":["/a"]}}]}]}}],)"
    R"("workload":{"namespace":"n"},"request":{"path":"/a"}})";

}  // namespace

TEST_CASE("check on the seed scenario reproduces Istio: the frontend's GET is denied") {
  const auto r = run_tollgate("check -f '" + source_path("examples/seed") +
                              "' --workload default/backend --request " + kRequestGet);
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::StartsWith("DENY  by default/deny-all-backend (DENY, rule 0)"));
  CHECK_THAT(r.out, Catch::Contains("DENY is evaluated before ALLOW"));
  CHECK_THAT(r.out, Catch::Contains("default/allow-frontend-get-data, default/deny-all-backend"));
}

TEST_CASE("check on the corrected scenario allows the GET and names the ALLOW policy") {
  const auto r = run_tollgate("check -o json -f '" + source_path("examples/seed-fixed") +
                              "' --workload default/app=backend/backend --request " + kRequestGet);
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  const json d = json::parse(r.out);
  CHECK(d["decision"] == "ALLOW");
  CHECK(d["policy"] == "default/allow-frontend-get-data");
  CHECK(d["workload"]["labels"]["app"] == "backend");
  const auto post = run_tollgate(
      "check -f '" + source_path("examples/seed-fixed") + "' --workload default/backend " +
      R"(--request '{"source":{"principal":"cluster.local/ns/default/sa/frontend"},"method":"POST","path":"/api/v1/data"}')");
  REQUIRE(post.status == 0);
  CHECK_THAT(post.out, Catch::StartsWith("DENY  (default: no policy decided)"));
  CHECK_THAT(post.out, Catch::Contains("not allowed by default/allow-frontend-get-data rule 0: "
                                       "request.method is \"POST\", not one of [GET]"));
}

TEST_CASE("lint on the seed scenario reports the useless ALLOW policy and exits 1") {
  const auto r = run_tollgate("lint -f '" + source_path("examples/seed") + "'");
  INFO(r.out << r.err);
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains("error TG101 default/allow-frontend-get-data"));
  CHECK_THAT(r.out, Catch::Contains("can never take effect"));
  const auto j = run_tollgate("lint -o json -f '" + source_path("examples/seed") + "'");
  const json out = json::parse(j.out);
  CHECK(out["errors"] == 1);
  bool found = false;
  for (const auto& f : out["findings"]) found = found || f["code"] == "TG101";
  CHECK(found);
  const auto fixed = run_tollgate("lint -f '" + source_path("examples/seed-fixed") + "'");
  CHECK(fixed.status == 0);
}

TEST_CASE("check and lint name bad inputs and exit 2") {
  auto r = run_tollgate("check -f /nonexistent --workload a/b --request '{}'");
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("/nonexistent: no such file or directory"));
  r = run_tollgate("check -f '" + source_path("examples/seed") +
                   "' --workload default/nope --request '{}'");
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("no workload default/nope"));
  r = run_tollgate("check -f '" + source_path("examples/seed") +
                   "' --workload default/backend --request '{\"port\":\"x\"}'");
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("--request: request.port"));
  r = run_tollgate("check -f '" + source_path("examples/seed") +
                   "' --workload default/backend --request '{' ");
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("--request: not valid JSON"));
  r = run_tollgate("check -f '" + source_path("examples/seed") +
                   "' --workload default/backend --request "
                   "'{\"requestPrincipal\":\"i/bob\",\"jwtClaims\":{\"iss\":\"j\"}}'");
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("--request: request.requestPrincipal \"i/bob\" disagrees"));
  r = run_tollgate("frobnicate");
  CHECK(r.status != 0);
}

TEST_CASE("eval reports input errors as {error} objects and never crashes on garbage") {
  auto r = run_tollgate("eval", "[1,2]");
  CHECK(r.status == 1);
  CHECK(json::parse(r.out)["error"] == "input: must be an object");
  r = run_tollgate("eval",
                   R"({"workload":{"namespace":"x"},"request":{},"policies":[{"kind":"Pod"}]})");
  CHECK(r.status == 1);
  CHECK(json::parse(r.out)["error"] == "policies[0]: kind must be AuthorizationPolicy");
  r = run_tollgate("eval", R"({"workload":{"namespace":"x"},"request":{},"extra":1})");
  CHECK(json::parse(r.out)["error"] == "input.extra: unknown field");
  std::string garbage;
  for (int i = 0; i < 256; ++i) {
    if (i != '\n') garbage.push_back(static_cast<char>(i));
  }
  r = run_tollgate("eval --jsonl",
                   garbage + "\n\n" + R"({"workload":{"namespace":"x"},"request":{}})" + "\n");
  CHECK(r.status == 1);
  std::istringstream lines(r.out);
  std::string l1, l2;
  std::getline(lines, l1);
  std::getline(lines, l2);
  CHECK(json::parse(l1).contains("error"));
  CHECK(json::parse(l2)["decision"] == "ALLOW");
}

TEST_CASE("eval --jsonl caches per policy set but never mixes two sets up") {
  const std::string& allow_a = kAllowA;
  std::string allow_b = allow_a;
  allow_b.replace(allow_b.find("\"/a\"]"), 5, "\"/b\"]");
  const auto r = run_tollgate("eval --jsonl", allow_a + "\n" + allow_b + "\n" + allow_a + "\n");
  REQUIRE(r.status == 0);
  std::istringstream lines(r.out);
  std::string l1, l2, l3;
  std::getline(lines, l1);
  std::getline(lines, l2);
  std::getline(lines, l3);
  CHECK(json::parse(l1)["decision"] == "ALLOW");
  CHECK(json::parse(l2)["decision"] == "DENY");
  CHECK(json::parse(l3)["decision"] == "ALLOW");
}

TEST_CASE("eval --jsonl answers a line over --max-input-bytes with an error and goes on") {
  const std::string ok = R"({"workload":{"namespace":"x"},"request":{}})";
  const std::string huge = R"({"workload":{"namespace":")" + std::string(5000, 'x') + R"("}})";
  const auto r = run_tollgate("eval --jsonl --max-input-bytes 1000", huge + "\n" + ok + "\n");
  CHECK(r.status == 1);
  std::istringstream lines(r.out);
  std::string l1, l2, l3;
  std::getline(lines, l1);
  std::getline(lines, l2);
  CHECK_FALSE(std::getline(lines, l3));
  CHECK(json::parse(l1)["error"] == "line 1: longer than 1000 bytes (--max-input-bytes); skipped");
  CHECK(json::parse(l2)["decision"] == "ALLOW");
  // Without --jsonl the whole input is one input.
  const auto one = run_tollgate("eval --max-input-bytes 1000", huge);
  CHECK(one.status == 1);
  CHECK(json::parse(one.out)["error"] ==
        "input longer than 1000 bytes (--max-input-bytes); skipped");
}

TEST_CASE("eval --jsonl reads lines across its read chunks, the last without a newline") {
  const std::string& allow_a = kAllowA;
  std::string deny_b = allow_a;
  deny_b.replace(deny_b.rfind("\"/a\""), 4, "\"/b\"");
  std::string input;
  const int n = 1000;  // about 200 KB: several 64 KiB chunks
  for (int i = 0; i < n; ++i) input += (i % 3 == 0 ? deny_b : allow_a) + (i + 1 < n ? "\n" : "");
  const auto r = run_tollgate("eval --jsonl", input);
  REQUIRE(r.status == 0);
  std::istringstream lines(r.out);
  std::string l;
  int i = 0;
  while (std::getline(lines, l)) {
    CHECK(json::parse(l)["decision"] == (i % 3 == 0 ? "DENY" : "ALLOW"));
    ++i;
  }
  CHECK(i == n);
}

TEST_CASE("eval --jsonl answers each line before waiting for the next, as a coprocess") {
  int to_child[2], from_child[2];
  REQUIRE(pipe(to_child) == 0);
  REQUIRE(pipe(from_child) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(to_child[0], 0);
    dup2(from_child[1], 1);
    close(to_child[1]);
    close(from_child[0]);
    execl(TOLLGATE_BINARY, TOLLGATE_BINARY, "eval", "--jsonl", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(to_child[0]);
  close(from_child[1]);
  // One line at a time; each answer must come while stdin is still open.
  auto answer = [&](const std::string& line) {
    std::string in = line + "\n";
    if (write(to_child[1], in.data(), in.size()) != static_cast<ssize_t>(in.size()))
      return std::string();
    std::string got;
    char buf[4096];
    while (got.find('\n') == std::string::npos) {
      pollfd p{from_child[0], POLLIN, 0};
      if (poll(&p, 1, 5000) <= 0) break;  // no answer within 5 s
      const ssize_t n = read(from_child[0], buf, sizeof buf);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
    return got;
  };
  const auto a1 = answer(R"({"workload":{"namespace":"x"},"request":{}})");
  REQUIRE_FALSE(a1.empty());
  CHECK(json::parse(a1)["decision"] == "ALLOW");
  const auto a2 = answer("not json");
  REQUIRE_FALSE(a2.empty());
  CHECK(json::parse(a2).contains("error"));
  close(to_child[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  close(from_child[0]);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
}

TEST_CASE("eval, single and --jsonl, refuses a requestPrincipal that contradicts jwtClaims") {
  const std::string deny =
      R"({"policies":[{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy",
          "metadata":{"name":"x","namespace":"foo"},"spec":{"action":"DENY","rules":[{"from":
          [{"source":{"requestPrincipals":["https://issuer.example/*"]}}]}]}}],
          "workload":{"namespace":"foo"},"request":)";
  const std::string agree =
      R"({"requestPrincipal":"https://issuer.example/bob","jwtClaims":{"groups":["dev"]}})";
  const std::string disagree =
      R"({"requestPrincipal":"https://issuer.example/bob","jwtClaims":{"sub":"alice"}})";
  auto one_line = [](std::string s) {
    std::erase(s, '\n');
    return s;
  };
  auto r = run_tollgate("eval", deny + agree + "}");
  CHECK(r.status == 0);
  CHECK(json::parse(r.out)["decision"] == "DENY");
  CHECK(json::parse(r.out)["policy"] == "foo/x");
  r = run_tollgate("eval", deny + disagree + "}");
  CHECK(r.status == 1);
  CHECK_THAT(json::parse(r.out)["error"].get<std::string>(),
             Catch::Contains("disagrees with jwtClaims: sub is \"alice\""));
  // --jsonl: the fast path hands the contradiction to the full parser, which words it.
  r = run_tollgate("eval --jsonl",
                   one_line(deny + agree + "}") + "\n" + one_line(deny + disagree + "}") + "\n");
  CHECK(r.status == 1);
  std::istringstream lines(r.out);
  std::string l1, l2;
  std::getline(lines, l1);
  std::getline(lines, l2);
  CHECK(json::parse(l1)["policy"] == "foo/x");
  CHECK_THAT(json::parse(l2)["error"].get<std::string>(), Catch::Contains("disagrees"));
}

// ---- manifests that cannot be read ----------------------------------------------------------

namespace {

// The seed scenario plus a cluster export too large for --max-manifest-bytes 2000.
struct BrokenExport {
  tollgate::testing::TempDir dir;
  BrokenExport() {
    for (const auto& e : std::filesystem::directory_iterator(source_path("examples/seed"))) {
      std::filesystem::copy_file(e.path(), dir.path() / e.path().filename());
    }
    tollgate::testing::write_file(dir.path() / "cluster.json",
                                  R"({"kind":"List","items":[)" + std::string(3000, ' ') + "]}");
  }
  std::string path() const { return dir.path().string(); }
};

}  // namespace

TEST_CASE("check and lint exit 2 on a manifest they cannot read, naming it and why") {
  BrokenExport x;
  auto lint = run_tollgate("lint --max-manifest-bytes 2000 -f '" + x.path() + "'");
  CHECK(lint.status == 2);
  CHECK_THAT(lint.err, Catch::Contains("cluster.json: 3026 bytes, more than the limit of 2000"));
  auto check = run_tollgate("check --max-manifest-bytes 2000 -f '" + x.path() +
                            "' --workload default/backend --request " + kRequestGet);
  CHECK(check.status == 2);
  CHECK_THAT(check.err, Catch::Contains("cluster.json"));
  tollgate::testing::write_file(x.dir.path() / "cluster.json", R"({"kind":"List","items":[{]})");
  lint = run_tollgate("lint -f '" + x.path() + "'");
  CHECK(lint.status == 2);
  CHECK_THAT(lint.err, Catch::Contains("cluster.json: line 1, column 26"));
  // The default limit reads it.
  tollgate::testing::write_file(x.dir.path() / "cluster.json",
                                R"({"kind":"List","items":[)" + std::string(3000, ' ') + "]}");
  CHECK(run_tollgate("lint -f '" + x.path() + "'").status == 1);  // the seed's own finding
}

TEST_CASE("run --once on a manifest that cannot be read exits 1 at once, naming it") {
  BrokenExport x;
  const auto t0 = std::chrono::steady_clock::now();
  const auto r =
      run_tollgate("run --once --max-manifest-bytes 2000 --manifests '" + x.path() + "'");
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("cluster.json: 3026 bytes"));
  CHECK(r.out.empty());
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20));
}

TEST_CASE("run: /readyz answers 503 naming the unreadable manifest, then 200 once it reads") {
  BrokenExport x;
  tollgate::testing::TempDir scratch;
  const auto port_file = scratch.path() / "port";
  const auto log = scratch.path() / "stderr";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::execl(TOLLGATE_BINARY, TOLLGATE_BINARY, "run", "--manifests", x.path().c_str(),
            "--max-manifest-bytes", "2000", "--listen", "127.0.0.1:0", "--port-file",
            port_file.c_str(), nullptr);
    ::_exit(127);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{pid};
  // The child is another process: its port and readiness are polled, with a deadline.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::uint16_t port = 0;
  while (port == 0 && std::chrono::steady_clock::now() < deadline) {
    const auto text = tollgate::testing::read_file(port_file);
    if (!text.empty()) port = static_cast<std::uint16_t>(std::stoi(text));
    if (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  INFO(tollgate::testing::read_file(log));
  REQUIRE(port != 0);
  auto readyz_until = [&](const std::function<bool(const tollgate::testing::HttpReply&)>& done) {
    std::optional<tollgate::testing::HttpReply> r;
    while (std::chrono::steady_clock::now() < deadline) {
      r = tollgate::testing::http_get(port, "/readyz");
      if (r && done(*r)) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return r;
  };
  auto r = readyz_until(
      [](const auto& reply) { return reply.body.find("cluster.json") != std::string::npos; });
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK_THAT(r->body, Catch::Contains("3026 bytes, more than the limit of 2000"));
  auto tables = tollgate::testing::http_get(port, "/v1/tables/default/backend");
  REQUIRE(tables);
  CHECK(tables->status == 503);  // no table from a cluster missing a file
  tollgate::testing::write_file(x.dir.path() / "cluster.json.tmp", R"({"kind":"List","items":[]})");
  std::filesystem::rename(x.dir.path() / "cluster.json.tmp", x.dir.path() / "cluster.json");
  r = readyz_until([](const auto& reply) { return reply.status == 200; });
  REQUIRE(r);
  CHECK(r->status == 200);
}
