// Kubernetes client configuration: where the API server is and how to authenticate to it, read
// from kubeconfig files (merged as kubectl merges them) or from the in-cluster service account.
// The loaders are pure functions of the files and environment they read; call them before
// starting threads that change the environment. TokenSource is thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "tollgate/util/result.h"

namespace tollgate::k8s {

inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

struct ClusterConfig {
  std::string server;  // as written, e.g. "https://10.0.0.1:6443"
  std::string scheme, host,
      port;               // "https"/"http"; host without IPv6 brackets; port 443/80 default
  std::string base_path;  // path prefix of server ("/k8s/clusters/c-1"), no trailing '/'
  std::string ca_pem;     // CA bundle PEM; empty = system trust store
  std::string client_cert_pem, client_key_pem;
  std::string token;       // static bearer token
  std::string token_file;  // bearer token file, re-read as it rotates (see TokenSource)
  bool insecure_skip_tls_verify = false;
  std::string tls_server_name;  // SNI/verification name override
  std::string namespace_;       // the context's namespace, or the in-cluster namespace file
  std::string description;  // for logs, never a secret: kubeconfig path and context, or in-cluster
};

// Parses c.server into scheme/host/port/base_path; errors name the bad part.
util::Result<ClusterConfig> parse_server(ClusterConfig c);

// One kubeconfig file or a ':'-separated list merged as kubectl merges $KUBECONFIG: for each of
// clusters/users/contexts the first file defining a name wins, current-context comes from the
// first file setting it; files of a list that do not exist are skipped (an explicit single
// file must exist). `context` empty = current-context. Relative paths inside a file are
// relative to its directory. Errors name the file and the field path.
util::Result<ClusterConfig> load_kubeconfig(const std::string& paths,
                                            const std::string& context = "");

// In-cluster: KUBERNETES_SERVICE_HOST/PORT, `<dir>/ca.crt`, `<dir>/token` (token_file is set;
// the token is read once to check it), `<dir>/namespace` (optional, "default" without it).
util::Result<ClusterConfig> in_cluster_config(const std::string& dir = kServiceAccountDir);

// What `tollgate run --kubeconfig F` and no flag resolve to: F if given; else $KUBECONFIG if
// set; else in-cluster (from `in_cluster_dir`) if KUBERNETES_SERVICE_HOST is set; else
// $HOME/.kube/config. Errors name what was tried.
util::Result<ClusterConfig> resolve_config(const std::string& kubeconfig_flag,
                                           const std::string& in_cluster_dir = kServiceAccountDir);

// The bearer token to send. With a token_file, the file is re-read when its identity,
// modification time or size changes, checked at most once per `recheck`; whitespace is
// trimmed. A failed re-read keeps the last good token (initially the static token) and sets
// last_error(). Without a token_file it returns the static token (may be empty). Thread-safe.
class TokenSource {
 public:
  explicit TokenSource(const ClusterConfig& c,
                       std::chrono::milliseconds recheck = std::chrono::seconds(1));

  std::string token();
  // Empty when the last check succeeded.
  std::string last_error() const;

 private:
  struct FileStamp {
    std::uint64_t dev = 0, ino = 0, size = 0;
    std::int64_t mtime_ns = 0;
    bool operator==(const FileStamp&) const = default;
  };

  void refresh_locked();

  const std::string token_file_;
  const std::chrono::milliseconds recheck_;
  mutable std::mutex mu_;
  std::string token_;  // guarded by mu_
  std::string error_;  // guarded by mu_
  bool checked_ = false;
  std::chrono::steady_clock::time_point last_check_;
  bool have_stamp_ = false;
  FileStamp stamp_;
};

// A loggable form of an Authorization header value: "Bearer <redacted, 842 bytes>". Never log
// a token; the result never contains any of it.
std::string redact(const std::string& authorization_value);

}  // namespace tollgate::k8s
