// HTTP(S) to the Kubernetes API server: one keep-alive connection per Transport, used by one
// thread at a time (a watcher); cancel() may be called from any thread. Boost.Beast and
// OpenSSL stay inside transport.cc. TLS verifies the server's certificate and its name (or
// IP) unless insecure-skip-tls-verify was asked for, which is logged loudly.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tollgate/k8s/config.h"
#include "tollgate/util/result.h"

namespace tollgate::k8s {

// An answer from the server (the API server, or a tollgate controller for the agent).
struct ApiResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// The message of a Kubernetes Status body; empty when the body is not one.
std::string status_message(std::string_view body);
// "the API server answered <status>[: <the Status message>]".
std::string api_error(const ApiResponse& r);
// A failed call as logs and reasons say it: api_error() for an answer, else the transport's
// error.
std::string describe(const util::Result<ApiResponse>& r);

// Request header fields to send besides Host, User-Agent, Accept and Authorization.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

// One request and its whole answer.
struct Call {
  std::string method = "GET";  // GET, POST, PUT, PATCH, DELETE
  std::string target;          // path and query, without the server's base path
  HeaderList headers;          // besides Host, User-Agent, Accept and Authorization
  std::string body;            // sent when not empty, or for POST/PUT/PATCH
  std::string content_type = "application/json";
  std::chrono::milliseconds timeout{10000};
  std::size_t max_body = std::size_t{1} << 20;  // a longer answer is an error
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Sends `call` and reads the whole answer within its timeout. A keep-alive connection the
  // server closed while idle is retried once on a fresh one (the request had not reached the
  // server: writes to the API are preconditioned on a resourceVersion anyway).
  virtual util::Result<ApiResponse> send(const Call& call) = 0;
  // GET `target` with `headers`; see send().
  util::Result<ApiResponse> get(const std::string& target, std::chrono::milliseconds timeout,
                                std::size_t max_body, const HeaderList& headers) {
    return send(Call{"GET", target, headers, "", "", timeout, max_body});
  }
  util::Result<ApiResponse> get(const std::string& target, std::chrono::milliseconds timeout,
                                std::size_t max_body) {
    return get(target, timeout, max_body, HeaderList{});
  }
  // GET a streaming response (a watch). For a 200, each complete line of the body goes to
  // `on_line` (return false to stop reading); the call returns when the server ends the
  // stream. Other statuses return with their body. Errors: connection problems, no byte
  // for `idle` (a stalled stream), a line longer than `max_line`.
  virtual util::Result<ApiResponse> stream(
      const std::string& target, std::chrono::milliseconds idle, std::size_t max_line,
      const std::function<bool(std::string_view)>& on_line) = 0;
  // From within `on_line`: the idle limit for the rest of the stream (a streaming list waits
  // less for its first events than a quiet watch may stay silent).
  virtual void set_idle(std::chrono::milliseconds idle) = 0;
  // Aborts the operation in progress, and every later one, promptly. Thread-safe.
  virtual void cancel() = 0;
};

// A transport for `config`, sending the token from `tokens` (if any) as a bearer token.
util::Result<std::unique_ptr<Transport>> make_transport(const ClusterConfig& config,
                                                        std::shared_ptr<TokenSource> tokens);

}  // namespace tollgate::k8s
