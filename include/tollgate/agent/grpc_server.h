// The agent's gRPC listener (`tollgate agent --grpc-listen`, docs/agent.md#grpc-ext_authz):
// envoy.service.auth.v3.Authorization/Check decided by an Authorizer, and
// grpc.health.v1.Health/Check, over plaintext HTTP/2 (grpc++'s async API). Calls run on the
// server's own threads (GrpcServerOptions::threads), concurrently when there are several;
// start() and stop() are called from one thread. grpc++ stays out of this header.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "tollgate/agent/authorizer.h"
#include "tollgate/agent/grpc_mapping.h"
#include "tollgate/eval/request.h"
#include "tollgate/util/result.h"

namespace tollgate::agent {

// Called once per Check call after the answer is built, on the call's thread: `request` is
// what was decided, or null when the CheckRequest could not be read (the answer is then a
// refusal); `elapsed` is the time from the call reaching the handler to its answer being
// built (mapping, decision and response; not the transport). Must be thread-safe and quick;
// an exception it throws is logged and dropped.
using DecisionHook = std::function<void(const eval::Request* request, const Answer& answer,
                                        std::chrono::nanoseconds elapsed)>;

struct GrpcServerOptions {
  CheckMappingOptions mapping;
  DecisionHook on_decision;
  // A larger message fails with RESOURCE_EXHAUSTED before it is read (grpc++'s default).
  int max_receive_message_bytes = 4 * 1024 * 1024;
  // Threads serving calls, each polling its own completion queue (`--grpc-threads`). One
  // suits a sidecar: a call then runs on the thread that read it.
  int threads = 1;
};

class GrpcServer {
 public:
  GrpcServer();
  ~GrpcServer();  // stop()
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // Listens on `listen` ("127.0.0.1:15011", "[::1]:0"; port 0 picks a free one) and serves
  // until stop(). Returns the bound port. `authorizer` must outlive the server.
  util::Result<int> start(const std::string& listen, const Authorizer& authorizer,
                          GrpcServerOptions options);
  // Stops accepting calls, lets those in flight finish for up to `grace`, then cancels the
  // rest and returns. Does nothing when not started.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

  struct Impl;  // grpc++'s server, queues and threads; opaque here

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::agent
