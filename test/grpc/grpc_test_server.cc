// The agent's gRPC server for test clients in other processes (test/grpc/ext_authz_client_test.py):
//   grpc_test_server [--table INPUT.json] [--jwt-payload-key KEY] [--self-provider NAME]
//                    [--max-headers N]
// INPUT.json is a `tollgate eval` input without its request ({"policies", "workload", "mesh"});
// without --table the server has no table. Prints "port N" once serving, serves until standard
// input closes, then stops and exits 0.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "tollgate/agent/grpc_server.h"
#include "tollgate/compile/compile.h"
#include "tollgate/policy/parse.h"

using namespace tollgate;
using nlohmann::json;

namespace {

int fail(const std::string& why) {
  std::fprintf(stderr, "grpc_test_server: %s\n", why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  agent::Authorizer authorizer;
  agent::GrpcServerOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return fail("missing value after " + arg);
    const std::string value = argv[++i];
    if (arg == "--table") {
      std::ifstream in(value);
      const json input =
          json::parse(std::string(std::istreambuf_iterator<char>(in), {}), nullptr, false);
      if (!input.is_object()) return fail(value + ": not a JSON object");
      auto mesh = policy::parse_mesh(input.value("mesh", json()));
      auto workload = policy::parse_workload(input.value("workload", json()));
      if (!mesh.ok() || !workload.ok()) return fail(value + ": bad mesh or workload");
      std::vector<policy::Policy> policies;
      for (const auto& p : input.value("policies", json::array())) {
        policies.push_back(policy::parse_policy(p));
      }
      auto table = std::make_shared<agent::ActiveTable>();
      table->table = compile::compile_table(policies, *workload, *mesh);
      authorizer.activate(std::move(table));
    } else if (arg == "--jwt-payload-key") {
      options.mapping.jwt_payload_key = value;
    } else if (arg == "--self-provider") {
      options.mapping.self_provider = value;
    } else if (arg == "--max-headers") {
      options.mapping.max_headers = std::stoul(value);
    } else {
      return fail("unknown argument " + arg);
    }
  }
  agent::GrpcServer server;
  auto port = server.start("127.0.0.1:0", authorizer, options);
  if (!port.ok()) return fail(port.error().message);
  std::printf("port %d\n", *port);
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  server.stop();
  return 0;
}
