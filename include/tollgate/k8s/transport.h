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

// Request header fields to send besides Host, User-Agent, Accept and Authorization.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

class Transport {
 public:
  virtual ~Transport() = default;
  // GET `target` (path and query, without the server's base path) with `headers`, and read
  // the whole body, at most `max_body` bytes, within `timeout`.
  virtual util::Result<ApiResponse> get(const std::string& target,
                                        std::chrono::milliseconds timeout, std::size_t max_body,
                                        const HeaderList& headers) = 0;
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
