// A fake Kubernetes API server for tests: list (paginated, consistent snapshots), watch (chunked
// JSON lines, bookmarks, history replay, compaction), the streaming list (sendInitialEvents),
// bearer tokens, TLS and injected faults. sendInitialEvents and resourceVersionMatch are
// validated as kube-apiserver validates them; label and field selectors are refused (400)
// rather than ignored, since tollgate sends none.
// Thread-safe: every public method may be called from any thread while clients are connected.
// It serves on 127.0.0.1 with its own threads; the destructor closes every connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/fake_reviews.h"

namespace tollgate::testing {

struct FakeApiServerOptions {
  // HTTPS with an EC P-256 self-signed certificate generated at start (make_self_signed in
  // support/certs.h); ca_pem() returns it.
  bool tls = false;
  // TLS only: when set, require a client certificate that verifies against this CA (PEM).
  std::string client_ca_pem;
  // When set, requests without `Authorization: Bearer <token>` get 401 with a Status body.
  std::string bearer_token;
};

class FakeApiServer {
 public:
  explicit FakeApiServer(FakeApiServerOptions options = {});
  ~FakeApiServer();
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  std::uint16_t port() const;
  std::string url() const;     // "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT"
  std::string ca_pem() const;  // the server certificate (PEM) when tls, else empty
  void set_bearer_token(std::string token);

  // A collection is a list path such as "/api/v1/pods" or
  // "/apis/security.istio.io/v1/authorizationpolicies". "<prefix>/namespaces/<ns>/<resource>"
  // serves the namespace's part of "<prefix>/<resource>". Other paths answer 404.
  void add_collection(const std::string& path, const std::string& list_kind,
                      const std::string& api_version, bool items_carry_kind);

  // Mutations bump one global resourceVersion and notify open watches of the collection.
  // upsert keys objects by metadata.namespace + metadata.name, sets metadata.resourceVersion
  // (and metadata.uid when absent), and keeps the object as JSON text without kind and
  // apiVersion (they come from the collection). remove of an absent object does nothing.
  // Both throw std::invalid_argument for an unregistered path.
  void upsert(const std::string& path, nlohmann::json object);
  void remove(const std::string& path, const std::string& ns, const std::string& name);
  // Current items by namespace/name, as watch events carry them (with kind and apiVersion).
  nlohmann::json objects(const std::string& path) const;
  std::string resource_version() const;

  // Forgets history: every resourceVersion handed out so far becomes too old (the counter is
  // bumped once so that a fresh list gets a usable one). A watch from an older resourceVersion
  // gets an ERROR event with a 410 Expired Status; an older continue token gets HTTP 410.
  void compact();

  enum class Fault {
    kHttp401,
    kHttp403,
    kHttp429,
    kHttp500,
    kHttp410,
    kDropBeforeResponse,  // list or watch: close the socket without answering
    kDropMidStream,       // watch: headers and pending events, then close without final chunk
    kGarbageLine,         // watch: one line of non-JSON first, then normal
    kStall,               // watch: headers, nothing for stall_seconds, then close
    kErrorEvent410,       // watch: one ERROR event with a 410 Expired Status, then end
  };
  // Queued per collection; each request takes the first queued fault that applies to it (HTTP
  // status and drop faults apply to lists and watches, the others to watches only).
  void inject(const std::string& path, Fault fault, int count = 1);
  void set_stall_seconds(double s);

  // Sends a BOOKMARK at the current resourceVersion to the collection's open watches that
  // asked for allowWatchBookmarks=true.
  void bookmark(const std::string& path);
  // Ends every open watch of the collection cleanly (final chunk), as timeoutSeconds does.
  void close_watches(const std::string& path);
  std::size_t open_watches(const std::string& path) const;
  bool wait_for_watches(const std::string& path, std::size_t n, double timeout_seconds) const;

  struct Request {
    std::string method, target, authorization;
    int status = 0;  // 0 when the connection was dropped without an answer
  };
  std::vector<Request> requests() const;  // every request, in arrival order
  // Waits until at least `n` requests have arrived whose target starts with `prefix`.
  bool wait_for_requests(const std::string& prefix, std::size_t n, double timeout_seconds) const;
  void set_max_page(std::size_t n);  // cap on items per list page (0: no cap)

  // How a watch with sendInitialEvents=true is answered.
  enum class WatchList {
    kServe,   // kube-apiserver 1.32+: the state as ADDED events, then a BOOKMARK annotated
              // k8s.io/initial-events-end: "true" at its resourceVersion, then the watch
    kRefuse,  // the WatchList feature gate off (or older than 1.27): 422 Invalid
    kIgnore,  // a server that knows neither parameter: a plain watch (no ending bookmark)
  };
  void set_watch_list(WatchList mode);

  // POST .../tokenreviews and .../subjectaccessreviews (support/fake_reviews.h).
  FakeReviews& reviews();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::testing
