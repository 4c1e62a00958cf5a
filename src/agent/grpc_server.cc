#include "tollgate/agent/grpc_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <cstddef>
#include <exception>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "envoy/service/auth/v3/external_auth.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tollgate/agent/grpc_response.h"
#include "tollgate/util/log.h"

namespace tollgate::agent {
namespace {

namespace auth = envoy::service::auth::v3;
namespace health = grpc::health::v1;

// Check takes the request as bytes and parses it itself, so that a CheckRequest protobuf
// cannot parse (or a message cut short, which grpc++ hands over as none) is refused:
// PERMISSION_DENIED, completed with status OK. grpc++ would otherwise fail such a call with an
// error status, which failure_mode_allow turns into an allow.
using AuthorizationService = auth::Authorization::WithRawMethod_Check<auth::Authorization::Service>;

// Calls requested per completion queue and method at any time; grpc++ queues calls that
// arrive while all are taken.
constexpr int kCallsInWaiting = 16;

}  // namespace

// One completion queue per thread, each thread polling its own and running the calls that
// complete there: on the sidecar's usual single thread, a call costs no thread hop.
struct GrpcServer::Impl {
  const Authorizer* authorizer = nullptr;
  GrpcServerOptions options;
  AuthorizationService authorization;
  health::Health::AsyncService health;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues;
  std::unique_ptr<grpc::Server> server;
  std::vector<std::thread> threads;

  void poll(grpc::ServerCompletionQueue* cq);
  void decide(const grpc::ByteBuffer& request, grpc::ByteBuffer& response,
              std::chrono::steady_clock::time_point start) const;
  void report(const eval::Request* request, const Answer& answer,
              std::chrono::steady_clock::time_point start) const;
};

namespace {

// A call's state machine: requested -> answered -> finished (deleted). Each call, once it
// arrives, requests its successor first, so kCallsInWaiting stay requested.
class Call {
 public:
  Call() = default;
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;
  virtual ~Call() = default;
  // `ok` is the completion queue's: false once the server shuts down.
  virtual void proceed(bool ok) = 0;
};

class CheckCall final : public Call {
 public:
  CheckCall(GrpcServer::Impl& impl, grpc::ServerCompletionQueue* cq)
      : impl_(impl), cq_(cq), writer_(&context_) {
    impl.authorization.RequestCheck(&context_, &request_, &writer_, cq, cq, this);
  }

  void proceed(bool ok) override {
    if (!ok || answered_) {
      delete this;
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    new CheckCall(impl_, cq_);
    impl_.decide(request_, response_, start);
    answered_ = true;
    writer_.Finish(response_, grpc::Status::OK, this);
  }

 private:
  GrpcServer::Impl& impl_;
  grpc::ServerCompletionQueue* cq_;
  grpc::ServerContext context_;
  grpc::ByteBuffer request_, response_;
  grpc::ServerAsyncResponseWriter<grpc::ByteBuffer> writer_;
  bool answered_ = false;
};

// SERVING while the authorizer has a table, NOT_SERVING otherwise, for the server as a whole
// ("") and for the Authorization service; any other name is NOT_FOUND, as the health
// checking protocol asks.
class HealthCall final : public Call {
 public:
  HealthCall(GrpcServer::Impl& impl, grpc::ServerCompletionQueue* cq)
      : impl_(impl), cq_(cq), writer_(&context_) {
    impl.health.RequestCheck(&context_, &request_, &writer_, cq, cq, this);
  }

  void proceed(bool ok) override {
    if (!ok || answered_) {
      delete this;
      return;
    }
    new HealthCall(impl_, cq_);
    answered_ = true;
    const std::string& service = request_.service();
    if (!service.empty() && service != auth::Authorization::service_full_name()) {
      writer_.FinishWithError(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service"), this);
      return;
    }
    response_.set_status(impl_.authorizer->active() ? health::HealthCheckResponse::SERVING
                                                    : health::HealthCheckResponse::NOT_SERVING);
    writer_.Finish(response_, grpc::Status::OK, this);
  }

 private:
  GrpcServer::Impl& impl_;
  grpc::ServerCompletionQueue* cq_;
  grpc::ServerContext context_;
  health::HealthCheckRequest request_;
  health::HealthCheckResponse response_;
  grpc::ServerAsyncResponseWriter<health::HealthCheckResponse> writer_;
  bool answered_ = false;
};

bool parse(const grpc::ByteBuffer& request, auth::CheckRequest& check) {
  if (!request.Valid()) return false;  // no message at all
  grpc::ByteBuffer copy(request);      // shares the slices
  grpc::ProtoBufferReader reader(&copy);
  return check.ParseFromZeroCopyStream(&reader);
}

void serialize(const auth::CheckResponse& r, grpc::ByteBuffer& out) {
  bool own_buffer = false;
  if (!grpc::SerializationTraits<auth::CheckResponse>::Serialize(r, &out, &own_buffer).ok()) {
    throw std::runtime_error("the CheckResponse cannot be serialized");
  }
}

void refuse_in(grpc::ByteBuffer& response) {
  try {
    auth::CheckResponse r;
    fill_check_response(Authorizer::refuse("internal error"), r);
    serialize(r, response);
  } catch (...) {
    // Nothing left to answer with: an empty CheckResponse has no OK status, so it denies.
    response.Clear();
  }
}

}  // namespace

void GrpcServer::Impl::poll(grpc::ServerCompletionQueue* cq) {
  for (int i = 0; i < kCallsInWaiting; ++i) {
    new CheckCall(*this, cq);
    new HealthCall(*this, cq);
  }
  void* tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) static_cast<Call*>(tag)->proceed(ok);
}

// Every call completes with status OK and a decision: an error status is what
// failure_mode_allow turns into an allow.
void GrpcServer::Impl::decide(const grpc::ByteBuffer& request, grpc::ByteBuffer& response,
                              std::chrono::steady_clock::time_point start) const {
  try {
    // The messages live in an arena that starts on the stack: no heap for a usual request.
    alignas(std::max_align_t) char initial[8192];
    google::protobuf::ArenaOptions arena_options;
    arena_options.initial_block = initial;
    arena_options.initial_block_size = sizeof initial;
    google::protobuf::Arena arena(arena_options);
    auto* check = google::protobuf::Arena::CreateMessage<auth::CheckRequest>(&arena);
    auto* out = google::protobuf::Arena::CreateMessage<auth::CheckResponse>(&arena);
    if (!parse(request, *check)) {
      const Answer answer = Authorizer::refuse("the message is not a CheckRequest protobuf");
      fill_check_response(answer, *out);
      report(nullptr, answer, start);
    } else {
      auto mapped = map_check_request(*check, options.mapping);
      const Answer answer =
          mapped.ok() ? authorizer->decide(*mapped) : Authorizer::refuse(mapped.error().message);
      fill_check_response(answer, *out);
      report(mapped.ok() ? &*mapped : nullptr, answer, start);
    }
    serialize(*out, response);
  } catch (const std::exception& e) {
    util::log_error("grpc Check failed; denied", {{"error", e.what()}});
    refuse_in(response);
  } catch (...) {
    util::log_error("grpc Check failed; denied");
    refuse_in(response);
  }
}

void GrpcServer::Impl::report(const eval::Request* request, const Answer& answer,
                              std::chrono::steady_clock::time_point start) const {
  if (!options.on_decision) return;
  try {
    options.on_decision(request, answer, std::chrono::steady_clock::now() - start);
  } catch (const std::exception& e) {
    util::log_error("grpc decision hook failed", {{"error", e.what()}});
  } catch (...) {
    util::log_error("grpc decision hook failed");
  }
}

GrpcServer::GrpcServer() = default;

GrpcServer::~GrpcServer() { stop(); }

util::Result<int> GrpcServer::start(const std::string& listen, const Authorizer& authorizer,
                                    GrpcServerOptions options) {
  if (impl_) return util::make_error("the gRPC server is already started");
  if (listen.empty() || listen.find(':') == std::string::npos) {
    return util::make_error("--grpc-listen: \"" + listen + "\" is not ADDRESS:PORT");
  }
  if (options.threads < 1) return util::make_error("--grpc-threads: must be at least 1");
  auto impl = std::make_unique<Impl>();
  impl->authorizer = &authorizer;
  impl->options = std::move(options);
  grpc::ServerBuilder builder;
  int port = 0;
  // Plaintext: the agent listens on loopback, where only the pod's own proxy reaches it.
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&impl->authorization);
  builder.RegisterService(&impl->health);
  builder.SetMaxReceiveMessageSize(impl->options.max_receive_message_bytes);
  // grpc++ sets SO_REUSEPORT by default, which would let a second agent share the port
  // silently instead of failing to start.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (int i = 0; i < impl->options.threads; ++i)
    impl->queues.push_back(builder.AddCompletionQueue());
  impl->server = builder.BuildAndStart();
  if (!impl->server || port == 0) {
    if (impl->server) impl->server->Shutdown();
    for (auto& q : impl->queues) {
      q->Shutdown();
      void* tag = nullptr;
      bool ok = false;
      while (q->Next(&tag, &ok)) {
      }
    }
    return util::make_error("--grpc-listen: cannot listen on " + listen);
  }
  for (auto& q : impl->queues) {
    impl->threads.emplace_back([impl = impl.get(), cq = q.get()] {
      try {
        impl->poll(cq);
      } catch (const std::exception& e) {
        // Only allocation can throw here; the calls themselves catch everything.
        util::log_error("grpc server thread failed", {{"error", e.what()}});
        std::terminate();
      }
    });
  }
  impl_ = std::move(impl);
  return port;
}

void GrpcServer::stop(std::chrono::milliseconds grace) {
  if (!impl_) return;
  // Calls in flight may finish until the deadline; then they are cancelled. The queues
  // drain after the server: every requested call comes back (ok false) and deletes itself.
  impl_->server->Shutdown(std::chrono::system_clock::now() + grace);
  for (auto& q : impl_->queues) q->Shutdown();
  for (auto& t : impl_->threads) t.join();
  impl_.reset();
}

}  // namespace tollgate::agent
