#include "tollgate/agent/grpc_server.h"

#include <grpcpp/grpcpp.h>

#include <exception>
#include <utility>

#include "envoy/service/auth/v3/external_auth.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tollgate/agent/grpc_response.h"
#include "tollgate/util/log.h"

namespace tollgate::agent {
namespace {

namespace auth = envoy::service::auth::v3;
namespace health = grpc::health::v1;

class AuthorizationService final : public auth::Authorization::CallbackService {
 public:
  AuthorizationService(const Authorizer& authorizer, const GrpcServerOptions& options)
      : authorizer_(authorizer), options_(options) {}

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const auth::CheckRequest* request,
                                  auth::CheckResponse* response) override {
    const auto start = std::chrono::steady_clock::now();
    // Every call completes with status OK and a decision: an error status is what
    // failure_mode_allow turns into an allow.
    try {
      auto mapped = map_check_request(*request, options_.mapping);
      const Answer answer =
          mapped.ok() ? authorizer_.decide(*mapped) : Authorizer::refuse(mapped.error().message);
      fill_check_response(answer, *response);
      report(mapped.ok() ? &*mapped : nullptr, answer, start);
    } catch (const std::exception& e) {
      util::log_error("grpc Check failed; denied", {{"error", e.what()}});
      fill_check_response(Authorizer::refuse("internal error"), *response);
    } catch (...) {
      util::log_error("grpc Check failed; denied");
      fill_check_response(Authorizer::refuse("internal error"), *response);
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  void report(const eval::Request* request, const Answer& answer,
              std::chrono::steady_clock::time_point start) const {
    if (!options_.on_decision) return;
    try {
      options_.on_decision(request, answer, std::chrono::steady_clock::now() - start);
    } catch (const std::exception& e) {
      util::log_error("grpc decision hook failed", {{"error", e.what()}});
    } catch (...) {
      util::log_error("grpc decision hook failed");
    }
  }

  const Authorizer& authorizer_;
  const GrpcServerOptions& options_;
};

// SERVING while the authorizer has a table, NOT_SERVING otherwise, for the server as a whole
// ("") and for the Authorization service; any other name is NOT_FOUND, as the health
// checking protocol asks.
class HealthService final : public health::Health::CallbackService {
 public:
  explicit HealthService(const Authorizer& authorizer) : authorizer_(authorizer) {}

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const health::HealthCheckRequest* request,
                                  health::HealthCheckResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const std::string& service = request->service();
    if (!service.empty() && service != auth::Authorization::service_full_name()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service"));
      return reactor;
    }
    response->set_status(authorizer_.active() ? health::HealthCheckResponse::SERVING
                                              : health::HealthCheckResponse::NOT_SERVING);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const Authorizer& authorizer_;
};

}  // namespace

struct GrpcServer::Impl {
  GrpcServerOptions options;
  std::unique_ptr<AuthorizationService> authorization;
  std::unique_ptr<HealthService> health;
  std::unique_ptr<grpc::Server> server;
};

GrpcServer::GrpcServer() = default;

GrpcServer::~GrpcServer() { stop(); }

util::Result<int> GrpcServer::start(const std::string& listen, const Authorizer& authorizer,
                                    GrpcServerOptions options) {
  if (impl_) return util::make_error("the gRPC server is already started");
  if (listen.empty() || listen.find(':') == std::string::npos) {
    return util::make_error("--grpc-listen: \"" + listen + "\" is not ADDRESS:PORT");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->authorization = std::make_unique<AuthorizationService>(authorizer, impl->options);
  impl->health = std::make_unique<HealthService>(authorizer);
  grpc::ServerBuilder builder;
  int port = 0;
  // Plaintext: the agent listens on loopback, where only the pod's own proxy reaches it.
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(impl->authorization.get());
  builder.RegisterService(impl->health.get());
  builder.SetMaxReceiveMessageSize(impl->options.max_receive_message_bytes);
  impl->server = builder.BuildAndStart();
  if (!impl->server || port == 0) {
    if (impl->server) impl->server->Shutdown();
    return util::make_error("--grpc-listen: cannot listen on " + listen);
  }
  impl_ = std::move(impl);
  return port;
}

void GrpcServer::stop(std::chrono::milliseconds grace) {
  if (!impl_) return;
  impl_->server->Shutdown(std::chrono::system_clock::now() + grace);
  impl_->server->Wait();
  impl_.reset();
}

}  // namespace tollgate::agent
