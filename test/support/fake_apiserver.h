// A fake Kubernetes API server for tests, enough of kube-apiserver for the controller and for
// the real kubectl:
// - list (paginated, consistent snapshots), watch (chunked JSON lines, bookmarks, history
//   replay, compaction), the streaming list (sendInitialEvents); sendInitialEvents and
//   resourceVersionMatch are validated as kube-apiserver validates them;
// - field selectors (equality: a.b=c, a.b==c, a.b!=c, comma-separated, any dotted path into the
//   object; an absent field is "") and label selectors (k=v, k==v, k!=v, k, !k, k in (..),
//   k notin (..)) on lists and watches; a watch sends ADDED/DELETED when an object starts/stops
//   matching, as kube-apiserver's watch cache does; a malformed selector answers 400;
// - object endpoints: GET, POST (create; generateName), PUT (update), PATCH and DELETE on
//   <prefix>/namespaces/<ns>/<resource>[/<name>[/status]], and <collection>/<name>[/status] for
//   cluster-scoped resources (namespaces, nodes, persistentvolumes, cluster roles...);
// - discovery for kubectl (/version, /api, /api/v1, /apis, /apis/<g>, /apis/<g>/<v>), built
//   from the collections, in the legacy format (kubectl falls back from aggregated discovery),
//   and /openapi/v3 with only each kind's PATCH operation: it tells kubectl that the server
//   validates fields (so `kubectl apply` needs no schema: no flag; fieldValidation is in fact
//   ignored) and takes no strategic merge patch for it. /openapi/v2 answers 404. kubectl's
//   typed commands for built-in kinds (`kubectl create namespace x`) send protobuf, which
//   answers 415: use `kubectl apply -f` / `create -f`;
// - bearer tokens, TLS, injected faults for reads and for writes, an outage (set_unavailable),
//   a log of requests and of writes, and a hook to race a write (set_before_write).
//
// Write semantics, as kube-apiserver applies them:
// - Every write that changes an object bumps the one global resourceVersion, stores the object
//   and notifies watches (ADDED, MODIFIED, DELETED), as upsert() and remove() do. A write that
//   changes nothing (a no-op PUT or PATCH) is not stored: the answer is the object as it was,
//   with its resourceVersion, and no watch event.
// - POST creates: 201 with the object; 409 AlreadyExists; the body's namespace must be the
//   path's (400 otherwise), filled when absent; the server sets metadata.uid,
//   resourceVersion, creationTimestamp (RFC 3339), and generation 1 when the collection has a
//   status subresource (whose create also drops any status, as for a custom resource).
// - PUT replaces the object; PATCH applies application/merge-patch+json (RFC 7386),
//   application/json-patch+json (RFC 6902; a failed op answers 422), or
//   application/strategic-merge-patch+json as a JSON merge patch with the $-directives
//   dropped (a simplification: lists are replaced, never merged by key, and kube-apiserver
//   refuses it for custom resources); application/apply-patch+yaml (server-side apply) and
//   other types answer 415. A metadata.resourceVersion in the new object (or the patch) is a
//   precondition: 409 Conflict when it is not the stored one. uid, creationTimestamp,
//   generation and resourceVersion are the server's: a client's values are ignored. 404 when
//   the object is absent (no create on update). The fieldValidation, dryRun and fieldManager
//   parameters are ignored.
// - Bodies are JSON (YAML and protobuf answer 415). A kind or apiVersion in the object must be
//   the collection's, the name the URL's, and a create sets no resourceVersion (400 each).
//   A namespaced collection takes creates at <prefix>/namespaces/<ns>/<resource> only (405 at
//   its all-namespaces path).
// - DELETE answers 200 with the object as deleted (at its new resourceVersion); the body's
//   DeleteOptions preconditions (uid, resourceVersion) are checked (409). Finalizers and
//   graceful deletion are not modelled: the object goes at once.
// - A collection with a status subresource (set_status_subresource): PUT and PATCH of the
//   object keep the stored status, and bump metadata.generation only when the spec (every
//   field but metadata and status) changes; PUT and PATCH of .../status change only the
//   status (no generation bump); GET .../status returns the object. Without one, .../status is
//   404 and status is written like any field.
// Objects keep the key order nlohmann::json gives them (sorted). Namespaces are not enforced:
// an object may be created in a namespace that does not exist.
// Thread-safe: every public method may be called from any thread while clients are connected.
// It serves on 127.0.0.1 with its own threads; the destructor closes every connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
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
  // Whether the collection has a status subresource (see the write semantics above); off by
  // default. Throws std::invalid_argument for an unregistered path.
  void set_status_subresource(const std::string& path, bool enabled);

  // The test's own mutations, not requests: no write log, no hooks, no faults. They bump one
  // global resourceVersion and notify open watches of the collection.
  // upsert keys objects by metadata.namespace + metadata.name, sets metadata.resourceVersion
  // (and metadata.uid when absent: an update keeps the stored uid), and keeps the object as
  // JSON text without kind and apiVersion (they come from the collection). Otherwise it stores
  // what it is given (status included), except that in a collection with a status subresource
  // metadata.generation is the server's: 1 for a new object, bumped when the spec differs from
  // the stored one, kept otherwise; a generation given explicitly (other than the stored one)
  // is stored as given. remove of an absent object does nothing.
  // Both throw std::invalid_argument for an unregistered path.
  void upsert(const std::string& path, nlohmann::json object);
  void remove(const std::string& path, const std::string& ns, const std::string& name);
  // Current items by namespace/name, as watch events carry them (with kind and apiVersion).
  nlohmann::json objects(const std::string& path) const;
  // The stored object (with kind and apiVersion), or null json when absent. ns is "" for a
  // cluster-scoped object.
  nlohmann::json object(const std::string& path, const std::string& ns,
                        const std::string& name) const;
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
    kDropAfterWrite,      // write (inject_write only): applied, then the socket closes unanswered
    kHttp422,             // write (inject_write only): 422 Invalid, not applied
  };
  // Queued per collection; each request takes the first queued fault that applies to it (HTTP
  // status and drop faults apply to lists and watches, the others to watches only).
  void inject(const std::string& path, Fault fault, int count = 1);
  // Queued per collection for the next writes (POST, PUT, PATCH, DELETE) to it, in order: an
  // HTTP status fault answers that status with a Status body (429 with Retry-After: 1) without
  // applying the write; kDropBeforeResponse closes the socket without applying it or
  // answering; kDropAfterWrite applies it and closes without answering. Watch-only faults are
  // refused (std::invalid_argument).
  void inject_write(const std::string& path, Fault fault, int count = 1);
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
  std::vector<Request> requests() const;  // every request (writes too), in arrival order

  // One write request (POST, PUT, PATCH, DELETE to a collection, an object or its status; not
  // the token and access reviews), in arrival order, refused ones too (an outage, a bad token,
  // a fault, a conflict).
  struct Write {
    std::string method;       // POST, PUT, PATCH, DELETE
    std::string path;         // the collection it resolved to, e.g. "/api/v1/pods"
    std::string ns, name;     // name empty for a create with generateName until resolved
    std::string subresource;  // "" or "status"
    std::string content_type;
    std::string body;           // as received
    int status = 0;             // the HTTP status answered; 0 until answered, or when dropped
    std::string authorization;  // the Authorization header
  };
  std::vector<Write> writes() const;
  // Waits until `pred` holds for the write log (it is called with a copy, without the server's
  // lock, whenever the log changes); false when `timeout_seconds` pass first.
  bool wait_for_writes(std::function<bool(const std::vector<Write>&)> pred,
                       double timeout_seconds) const;
  // Called (without the server's lock held) before a write is applied, after its faults: lets
  // a test race it, e.g. by upsert()ing the object so that the write's resourceVersion goes
  // stale. The Write has status 0. Null clears it.
  void set_before_write(std::function<void(const Write&)> hook);
  // While non-zero, every request (reads, watches, writes, reviews) answers this status with a
  // Status body (503 ServiceUnavailable and 429 with Retry-After: 1), as an API server outage;
  // the discovery documents (/version, /api, /api/v1, /apis, /apis/<g>, /apis/<g>/<v>) still
  // answer. Setting it ends the open watches abruptly, as a restarting apiserver drops them.
  // 0 clears it.
  void set_unavailable(int status);
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
