#include "tollgate/agent/grpc_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <cstddef>
#include <exception>
#include <stdexcept>
#include <utility>

#include "envoy/service/auth/v3/external_auth.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tollgate/agent/grpc_response.h"
#include "tollgate/util/log.h"

namespace tollgate::agent {
namespace {

namespace auth = envoy::service::auth::v3;
namespace health = grpc::health::v1;

// Check takes the request as bytes and parses it itself, so that a CheckRequest protobuf
// cannot parse is refused (PERMISSION_DENIED, completed with status OK) instead of being
// failed by grpc++ with an error status that failure_mode_allow would turn into an allow.
class AuthorizationService final
    : public auth::Authorization::WithRawCallbackMethod_Check<auth::Authorization::Service> {
 public:
  AuthorizationService(const Authorizer& authorizer, const GrpcServerOptions& options)
      : authorizer_(authorizer), options_(options) {}

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override {
    const auto start = std::chrono::steady_clock::now();
    // Every call completes with status OK and a decision: an error status is what
    // failure_mode_allow turns into an allow.
    try {
      // The messages live in an arena that starts on the stack: no heap for a usual request.
      alignas(std::max_align_t) char initial[8192];
      google::protobuf::ArenaOptions arena_options;
      arena_options.initial_block = initial;
      arena_options.initial_block_size = sizeof initial;
      google::protobuf::Arena arena(arena_options);
      auto* check = google::protobuf::Arena::CreateMessage<auth::CheckRequest>(&arena);
      auto* answer_pb = google::protobuf::Arena::CreateMessage<auth::CheckResponse>(&arena);
      decide(*request, *check, *answer_pb, start);
      bool own_buffer = false;
      if (!grpc::SerializationTraits<auth::CheckResponse>::Serialize(*answer_pb, response,
                                                                     &own_buffer)
               .ok()) {
        throw std::runtime_error("the CheckResponse cannot be serialized");
      }
    } catch (const std::exception& e) {
      util::log_error("grpc Check failed; denied", {{"error", e.what()}});
      refuse_in(*response);
    } catch (...) {
      util::log_error("grpc Check failed; denied");
      refuse_in(*response);
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  void decide(const grpc::ByteBuffer& request, auth::CheckRequest& check, auth::CheckResponse& out,
              std::chrono::steady_clock::time_point start) const {
    if (!parse(request, check)) {
      const Answer answer = Authorizer::refuse("the message is not a CheckRequest protobuf");
      fill_check_response(answer, out);
      report(nullptr, answer, start);
      return;
    }
    auto mapped = map_check_request(check, options_.mapping);
    const Answer answer =
        mapped.ok() ? authorizer_.decide(*mapped) : Authorizer::refuse(mapped.error().message);
    fill_check_response(answer, out);
    report(mapped.ok() ? &*mapped : nullptr, answer, start);
  }

  static bool parse(const grpc::ByteBuffer& request, auth::CheckRequest& check) {
    if (!request.Valid()) return false;  // no message at all
    grpc::ByteBuffer copy(request);      // shares the slices
    grpc::ProtoBufferReader reader(&copy);
    return check.ParseFromZeroCopyStream(&reader);
  }

  static void refuse_in(grpc::ByteBuffer& response) {
    auth::CheckResponse r;
    fill_check_response(Authorizer::refuse("internal error"), r);
    bool own_buffer = false;
    (void)grpc::SerializationTraits<auth::CheckResponse>::Serialize(r, &response, &own_buffer);
  }

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
  // grpc++ sets SO_REUSEPORT by default, which would let a second agent share the port
  // silently instead of failing to start.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
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
