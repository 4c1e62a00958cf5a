#include "test/support/fake_apiserver.h"

// GCC 12 in C++20 mode needs <utility> before Boost's headers.
#include <utility>

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <stdexcept>
#include <thread>

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "test/support/certs.h"
#include "test/support/fake_apiserver_internal.h"
#include "tollgate/util/base64.h"
#include "tollgate/util/strings.h"

namespace tollgate::testing {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using Fault = FakeApiServer::Fault;
using WatchList = FakeApiServer::WatchList;
using Write = FakeApiServer::Write;
using fake::applies;
using fake::Collection;
using fake::Event;
using fake::fault_status;
using fake::Key;
using fake::option_errors;
using fake::parse_query;
using fake::parse_rv;
using fake::Selector;
using fake::status_body;
using fake::Text;
using fake::unavailable_body;

// ---- protocol helpers --------------------------------------------------------------------

Key key_of(const json& object) {
  const json& meta = object.value("metadata", json::object());
  return {meta.value("namespace", ""), meta.value("name", "")};
}

// What a request resolved to.
struct Route {
  Collection* collection = nullptr;
  std::optional<std::string> ns;  // namespaced path
  std::string name;               // an object's path: its name
  std::string subresource;        // "status" for .../<name>/status
};

// What the connection does after a response.
enum class After { kKeepAlive, kClose };

struct Connection {
  explicit Connection(tcp::socket s) : socket(std::move(s)), fd(socket.native_handle()) {}
  tcp::socket socket;
  int fd;
  std::thread thread;
  std::atomic<bool> done{false};
};

}  // namespace

// ---- the server ----------------------------------------------------------------------------

class FakeApiServer::Impl {
 public:
  FakeReviews reviews_;  // thread-safe on its own

  explicit Impl(FakeApiServerOptions options)
      : bearer_token_(std::move(options.bearer_token)),
        tls_(options.tls),
        acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    if (tls_) {
      const Pem cert = make_self_signed("tollgate-fake-apiserver");
      ca_pem_ = cert.certificate;
      ssl_ctx_.emplace(ssl::context::tls_server);
      ssl_ctx_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                            ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                            ssl::context::no_tlsv1_1);
      ssl_ctx_->use_certificate_chain(net::buffer(cert.certificate));
      ssl_ctx_->use_private_key(net::buffer(cert.private_key), ssl::context::pem);
      if (!options.client_ca_pem.empty()) {
        ssl_ctx_->add_certificate_authority(net::buffer(options.client_ca_pem));
        ssl_ctx_->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      }
    }
    port_ = acceptor_.local_endpoint().port();
    acceptor_thread_ = std::thread([this] { accept_loop(); });
  }

  ~Impl() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);  // wakes the blocking accept
    acceptor_thread_.join();
    std::list<std::shared_ptr<Connection>> conns;
    {
      std::lock_guard lock(conns_mu_);
      for (auto& c : conns_) ::shutdown(c->fd, SHUT_RDWR);  // fds stay open until reaped
      conns.swap(conns_);
    }
    for (auto& c : conns) c->thread.join();
  }

  // ---- public API (all under mu_) ----

  std::uint16_t port() const { return port_; }
  std::string url() const {
    return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
  }
  std::string ca_pem() const { return ca_pem_; }

  void set_bearer_token(std::string token) {
    std::lock_guard lock(mu_);
    bearer_token_ = std::move(token);
  }

  void add_collection(const std::string& path, const std::string& list_kind,
                      const std::string& api_version, bool items_carry_kind) {
    std::lock_guard lock(mu_);
    Collection& c = collections_[path];
    c.path = path;
    fake::describe_path(c);
    c.list_kind = list_kind;
    c.kind = list_kind.size() > 4 && list_kind.ends_with("List")
                 ? list_kind.substr(0, list_kind.size() - 4)
                 : list_kind;
    c.api_version = api_version;
    c.kind_prefix =
        "{\"kind\":" + json(c.kind).dump() + ",\"apiVersion\":" + json(api_version).dump();
    c.items_carry_kind = items_carry_kind;
  }

  void upsert(const std::string& path, json object) {
    {
      std::lock_guard lock(mu_);
      Collection& c = collection(path);
      if (!object.is_object()) throw std::invalid_argument("fake apiserver: object is not a map");
      json& meta = object["metadata"];
      if (!meta.is_object()) meta = json::object();
      const Key key = key_of(object);
      if (key.second.empty()) throw std::invalid_argument("fake apiserver: object has no name");
      auto it = c.items.find(key);
      const bool added = it == c.items.end();
      Text prev = added ? nullptr : it->second;
      // The stored object is parsed only when needed: upserts of big collections stay cheap.
      json stored;
      if (!added && (!meta.contains("uid") || c.status_subresource)) stored = json::parse(*prev);
      if (!meta.contains("uid")) {
        meta["uid"] = added ? "fake-uid-" + c.kind + "-" + std::to_string(c.next_uid++)
                            : stored["metadata"].value("uid", "");
      }
      object.erase("kind");
      object.erase("apiVersion");
      if (c.status_subresource) fake::manage_generation(added ? nullptr : &stored, object);
      object["metadata"]["resourceVersion"] = std::to_string(++rv_);
      fake::record(c, rv_, added ? "ADDED" : "MODIFIED", key,
                   std::make_shared<const std::string>(object.dump()), std::move(prev));
    }
    cv_.notify_all();
  }

  void set_status_subresource(const std::string& path, bool enabled) {
    std::lock_guard lock(mu_);
    collection(path).status_subresource = enabled;
  }

  json object(const std::string& path, const std::string& ns, const std::string& name) const {
    std::lock_guard lock(mu_);
    const Collection& c = collection(path);
    auto it = c.items.find(Key{ns, name});
    if (it == c.items.end()) return nullptr;
    return json::parse(fake::with_kind(c, *it->second));
  }

  std::vector<Write> writes() const {
    std::lock_guard lock(mu_);
    return writes_;
  }

  bool wait_for_writes(const std::function<bool(const std::vector<Write>&)>& pred,
                       double timeout_seconds) const {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(timeout_seconds));
    std::unique_lock lock(mu_);
    for (;;) {
      const std::uint64_t seen = writes_seq_;
      std::vector<Write> copy = writes_;
      lock.unlock();
      if (pred(copy)) return true;
      lock.lock();
      if (!cv_.wait_until(lock, deadline, [&] { return writes_seq_ != seen; })) return false;
    }
  }

  void set_before_write(std::function<void(const Write&)> hook) {
    std::lock_guard lock(mu_);
    before_write_ = std::move(hook);
  }

  void set_unavailable(int status) {
    {
      std::lock_guard lock(mu_);
      unavailable_ = status;
      if (status != 0) ++drop_seq_;
    }
    cv_.notify_all();
  }

  void inject_write(const std::string& path, Fault fault, int count) {
    if (!fault_status(fault) && fault != Fault::kDropBeforeResponse &&
        fault != Fault::kDropAfterWrite) {
      throw std::invalid_argument("fake apiserver: not a write fault");
    }
    std::lock_guard lock(mu_);
    Collection& c = collection(path);
    for (int i = 0; i < count; ++i) c.write_faults.push_back(fault);
  }

  void remove(const std::string& path, const std::string& ns, const std::string& name) {
    {
      std::lock_guard lock(mu_);
      Collection& c = collection(path);
      auto it = c.items.find(Key{ns, name});
      if (it == c.items.end()) return;
      Text prev = it->second;
      json object = json::parse(*prev);
      object["metadata"]["resourceVersion"] = std::to_string(++rv_);
      fake::record(c, rv_, "DELETED", Key{ns, name},
                   std::make_shared<const std::string>(object.dump()), std::move(prev));
    }
    cv_.notify_all();
  }

  json objects(const std::string& path) const {
    std::lock_guard lock(mu_);
    const Collection& c = collection(path);
    json out = json::array();
    for (const auto& [key, text] : c.items) {
      std::string rendered;
      append_object(rendered, c, *text, true);
      out.push_back(json::parse(rendered));
    }
    return out;
  }

  std::string resource_version() const {
    std::lock_guard lock(mu_);
    return std::to_string(rv_);
  }

  void compact() {
    {
      std::lock_guard lock(mu_);
      compacted_rv_ = ++rv_;
    }
    cv_.notify_all();
  }

  void inject(const std::string& path, Fault fault, int count) {
    std::lock_guard lock(mu_);
    Collection& c = collection(path);
    for (int i = 0; i < count; ++i) c.faults.push_back(fault);
  }

  void set_stall_seconds(double s) {
    std::lock_guard lock(mu_);
    stall_seconds_ = s;
  }

  void bookmark(const std::string& path) {
    {
      std::lock_guard lock(mu_);
      ++collection(path).bookmark_seq;
    }
    cv_.notify_all();
  }

  void close_watches(const std::string& path) {
    {
      std::lock_guard lock(mu_);
      ++collection(path).close_seq;
    }
    cv_.notify_all();
  }

  std::size_t open_watches(const std::string& path) const {
    std::lock_guard lock(mu_);
    return collection(path).open_watches;
  }

  bool wait_for_watches(const std::string& path, std::size_t n, double timeout_seconds) const {
    std::unique_lock lock(mu_);
    const Collection& c = collection(path);
    return cv_.wait_for(lock, std::chrono::duration<double>(timeout_seconds),
                        [&] { return c.open_watches >= n; });
  }

  std::vector<Request> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }

  bool wait_for_requests(const std::string& prefix, std::size_t n, double timeout_seconds) const {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::duration<double>(timeout_seconds), [&] {
      return static_cast<std::size_t>(std::count_if(
                 requests_.begin(), requests_.end(),
                 [&](const Request& r) { return r.target.rfind(prefix, 0) == 0; })) >= n;
    });
  }

  void set_max_page(std::size_t n) {
    std::lock_guard lock(mu_);
    max_page_ = n;
  }

  void set_watch_list(WatchList mode) {
    std::lock_guard lock(mu_);
    watch_list_ = mode;
  }

 private:
  // Requires mu_. Collections are never removed, so references stay valid.
  Collection& collection(const std::string& path) {
    auto it = collections_.find(path);
    if (it == collections_.end()) {
      throw std::invalid_argument("fake apiserver: no collection " + path);
    }
    return it->second;
  }

  const Collection& collection(const std::string& path) const {
    return const_cast<Impl*>(this)->collection(path);
  }

  // Requires mu_.
  // A collection path, "<prefix>/namespaces/<ns>/<resource>[/<name>[/<subresource>]]" for a
  // namespaced collection, or "<collection>/<name>[/<subresource>]" for a cluster-scoped one.
  Route route(const std::string& path) {
    if (auto it = collections_.find(path); it != collections_.end())
      return {&it->second, {}, "", ""};
    static const std::regex kNamespaced(
        R"(^(/api/v1|/apis/[^/]+/[^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+)(?:/([^/]+))?)?$)");
    std::smatch m;
    if (std::regex_match(path, m, kNamespaced)) {
      auto it = collections_.find(m[1].str() + "/" + m[3].str());
      if (it != collections_.end() && it->second.namespaced) {
        return {&it->second, m[2].str(), m[4].str(), m[5].str()};
      }
    }
    // Cluster-scoped: strip one segment (the name) or two (name and subresource).
    std::string rest = path;
    std::vector<std::string> tail;
    for (int i = 0; i < 2; ++i) {
      const auto slash = rest.rfind('/');
      if (slash == std::string::npos || slash == 0) break;
      tail.insert(tail.begin(), rest.substr(slash + 1));
      rest.resize(slash);
      auto it = collections_.find(rest);
      if (it != collections_.end() && !it->second.namespaced && !tail[0].empty()) {
        return {&it->second, {}, tail[0], tail.size() > 1 ? tail[1] : ""};
      }
    }
    return {};
  }

  // ---- connections ----

  void accept_loop() {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket socket(ioc_);
      acceptor_.accept(socket, ec);
      {
        std::lock_guard lock(mu_);
        if (stopping_) return;
      }
      if (ec) {
        if (ec == net::error::invalid_argument || ec == net::error::bad_descriptor) return;
        continue;
      }
      // As kube-apiserver (Go's net package) does: no Nagle delay on small watch writes.
      socket.set_option(tcp::no_delay(true), ec);
      auto conn = std::make_shared<Connection>(std::move(socket));
      std::lock_guard lock(conns_mu_);
      // Reap finished connections; their fds close here, never while someone may shut them down.
      for (auto it = conns_.begin(); it != conns_.end();) {
        if ((*it)->done) {
          (*it)->thread.join();
          it = conns_.erase(it);
        } else {
          ++it;
        }
      }
      conn->thread = std::thread([this, conn] {
        try {
          if (ssl_ctx_) {
            ssl::stream<tcp::socket&> stream(conn->socket, *ssl_ctx_);
            boost::system::error_code hec;
            stream.handshake(ssl::stream_base::server, hec);
            if (!hec) serve(stream, *conn);
          } else {
            serve(conn->socket, *conn);
          }
        } catch (const std::exception&) {
          // The client went away mid-write, or we are stopping; nothing to report.
        }
        ::shutdown(conn->fd, SHUT_RDWR);
        conn->done = true;
      });
      conns_.push_back(std::move(conn));
    }
  }

  template <class Stream>
  void serve(Stream& stream, Connection& conn) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      boost::system::error_code ec;
      http::read(stream, buffer, req, ec);
      if (ec) return;
      if (handle(stream, conn, req) == After::kClose) return;
    }
  }

  template <class Stream>
  void write_json(Stream& stream, const http::request<http::string_body>& req, std::size_t index,
                  int status, const json& body) {
    write_body(stream, req, index, status, body.dump());
  }

  template <class Stream>
  void write_body(Stream& stream, const http::request<http::string_body>& req, std::size_t index,
                  int status, std::string body) {
    http::response<http::string_body> res{static_cast<http::status>(status), req.version()};
    res.set(http::field::content_type, "application/json");
    if (status == 429 || status == 503) res.set(http::field::retry_after, "1");
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    res.prepare_payload();
    set_status(index, status);
    http::write(stream, res);
  }

  void set_status(std::size_t index, int status) {
    {
      std::lock_guard lock(mu_);
      requests_[index].status = status;
      if (auto it = write_of_request_.find(index); it != write_of_request_.end()) {
        writes_[it->second].status = status;
        ++writes_seq_;
      }
    }
    cv_.notify_all();
  }

  template <class Stream>
  After handle(Stream& stream, Connection& conn, const http::request<http::string_body>& req) {
    const std::string target(req.target());
    const auto qpos = target.find('?');
    const std::string path = target.substr(0, qpos);
    const auto query = parse_query(
        qpos == std::string::npos ? std::string_view() : std::string_view(target).substr(qpos + 1));
    const auto param = [&](const char* name) -> std::string {
      auto it = query.find(name);
      return it == query.end() ? std::string() : it->second;
    };
    const auto has = [&](const char* name) { return query.find(name) != query.end(); };
    const std::string watch_param = param("watch");
    const bool watch = watch_param == "1" || watch_param == "true";
    const After after = req.keep_alive() ? After::kKeepAlive : After::kClose;
    const bool get = req.method() == http::verb::get;

    std::size_t index = 0;
    std::optional<Fault> fault;
    Route r;
    bool authorized = true;
    int unavailable = 0;
    std::optional<json> discovered;
    {
      std::lock_guard lock(mu_);
      index = requests_.size();
      requests_.push_back(Request{std::string(req.method_string()), target,
                                  std::string(req[http::field::authorization]), 0});
      if (!fake::is_discovery_path(path)) unavailable = unavailable_;
      authorized =
          bearer_token_.empty() || req[http::field::authorization] == "Bearer " + bearer_token_;
      r = route(path);
      const auto m = req.method();
      if (r.collection != nullptr && (m == http::verb::post || m == http::verb::put ||
                                      m == http::verb::patch || m == http::verb::delete_)) {
        log_write(index, req, r);
      }
      if (authorized && unavailable == 0) {
        if (r.collection != nullptr && r.name.empty() && get) {
          auto& faults = r.collection->faults;
          auto it = std::find_if(faults.begin(), faults.end(),
                                 [&](Fault f) { return applies(f, watch); });
          if (it != faults.end()) {
            fault = *it;
            faults.erase(it);
          }
        }
        if (r.collection == nullptr && get) discovered = fake::discovery(collections_, path, port_);
      }
    }
    cv_.notify_all();

    if (unavailable != 0) {
      write_json(stream, req, index, unavailable, unavailable_body(unavailable));
      return after;
    }
    if (!authorized) {
      write_json(stream, req, index, 401, status_body(401, "Unauthorized", "Unauthorized"));
      return after;
    }
    if (req.method() == http::verb::post) {
      if (auto a = reviews_.answer(path, req.body())) {
        if (a->stall.count() > 0) std::this_thread::sleep_for(a->stall);
        write_json(stream, req, index, a->status, a->body);
        return after;
      }
    }
    if (discovered) {
      write_json(stream, req, index, 200, *discovered);
      return after;
    }
    if (r.collection == nullptr ||
        (!r.subresource.empty() &&
         (r.subresource != "status" || !r.collection->status_subresource))) {
      write_json(stream, req, index, 404,
                 status_body(404, "NotFound", "the server could not find the requested resource"));
      return after;
    }
    if (!r.name.empty()) return serve_object(stream, conn, req, index, r);
    if (req.method() == http::verb::post && (r.ns || !r.collection->namespaced)) {
      return serve_write(stream, conn, req, index, r);
    }
    if (!get) {
      write_json(stream, req, index, 405,
                 status_body(405, "MethodNotAllowed",
                             "the server does not allow this method on the requested resource"));
      return after;
    }
    std::string selector_error;
    const auto selector =
        Selector::parse(param("fieldSelector"), param("labelSelector"), selector_error);
    if (!selector) {
      write_json(stream, req, index, 400, status_body(400, "BadRequest", selector_error));
      return after;
    }
    const WatchList mode = watch_list_mode();
    if (auto errors =
            option_errors(watch, has("sendInitialEvents"), param("resourceVersionMatch"), mode);
        !errors.empty()) {
      std::string message = "ListOptions.meta.k8s.io \"\" is invalid: ";
      if (errors.size() > 1) message += "[";
      for (std::size_t i = 0; i < errors.size(); ++i) message += (i ? ", " : "") + errors[i];
      if (errors.size() > 1) message += "]";
      write_json(stream, req, index, 422, status_body(422, "Invalid", message));
      return after;
    }
    // The others are watch faults, handled by the watch.
    if (auto answered = answer_fault(stream, conn, req, index, fault)) return *answered;
    if (watch) {
      // An old server (kIgnore) serves a plain watch whatever sendInitialEvents says.
      const bool initial_events = mode == WatchList::kServe && param("sendInitialEvents") == "true";
      return serve_watch(stream, conn, req, index, r, param, fault, initial_events, *selector);
    }
    return serve_list(stream, req, index, r, param, *selector);
  }

  // GET, PUT, PATCH or DELETE of one object (or its status).
  template <class Stream>
  After serve_object(Stream& stream, Connection& conn, const http::request<http::string_body>& req,
                     std::size_t index, const Route& r) {
    const After after = req.keep_alive() ? After::kKeepAlive : After::kClose;
    const Collection& c = *r.collection;
    switch (req.method()) {
      case http::verb::get: {
        std::string body;
        {
          std::lock_guard lock(mu_);
          auto it = c.items.find(Key{r.ns.value_or(""), r.name});
          if (it != c.items.end()) body = fake::with_kind(c, *it->second);
        }
        if (body.empty()) {
          write_json(stream, req, index, 404, fake::not_found(c, r.name));
        } else {
          write_body(stream, req, index, 200, std::move(body));
        }
        return after;
      }
      case http::verb::put:
      case http::verb::patch:
        return serve_write(stream, conn, req, index, r);
      case http::verb::delete_:
        if (r.subresource.empty()) return serve_write(stream, conn, req, index, r);
        [[fallthrough]];
      default:
        write_json(stream, req, index, 405,
                   status_body(405, "MethodNotAllowed",
                               "the server does not allow this method on the requested resource"));
        return after;
    }
  }

  // A status fault answered, or a drop; nullopt for no fault or one handled elsewhere.
  template <class Stream>
  std::optional<After> answer_fault(Stream& stream, Connection& conn,
                                    const http::request<http::string_body>& req, std::size_t index,
                                    std::optional<Fault> fault) {
    if (!fault) return std::nullopt;
    if (auto answer = fault_status(*fault)) {
      write_json(stream, req, index, answer->first, answer->second);
      return req.keep_alive() ? After::kKeepAlive : After::kClose;
    }
    if (*fault == Fault::kDropBeforeResponse) {
      ::shutdown(conn.fd, SHUT_RDWR);
      return After::kClose;
    }
    return std::nullopt;
  }

  // A write: logged, faulted, hooked, then applied under the lock.
  template <class Stream>
  After serve_write(Stream& stream, Connection& conn, const http::request<http::string_body>& req,
                    std::size_t index, const Route& r) {
    const After after = req.keep_alive() ? After::kKeepAlive : After::kClose;
    Collection& c = *r.collection;
    const fake::WriteOp op{std::string(req.method_string()),
                           r.ns.value_or(""),
                           r.name,
                           r.subresource,
                           std::string(req[http::field::content_type]),
                           req.body()};
    std::size_t w = 0;
    Write logged;
    std::optional<Fault> fault;
    std::function<void(const Write&)> hook;
    {
      std::lock_guard lock(mu_);
      w = write_of_request_.at(index);
      logged = writes_[w];
      if (!c.write_faults.empty()) {
        fault = c.write_faults.front();
        c.write_faults.pop_front();
      }
      hook = before_write_;
    }
    cv_.notify_all();
    if (auto answered = answer_fault(stream, conn, req, index, fault)) return *answered;
    if (hook) hook(logged);
    fake::WriteResult result;
    {
      std::lock_guard lock(mu_);
      result = fake::apply_write(c, rv_, op);
      writes_[w].name = result.name;
      ++writes_seq_;
    }
    cv_.notify_all();
    if (fault == Fault::kDropAfterWrite) {
      ::shutdown(conn.fd, SHUT_RDWR);
      return After::kClose;
    }
    write_json(stream, req, index, result.status, result.body);
    return after;
  }

  // Requires mu_. A write request (POST, PUT, PATCH, DELETE to a collection or an object) goes into
  // the write log as it arrives; set_status() fills in its answer.
  void log_write(std::size_t index, const http::request<http::string_body>& req, const Route& r) {
    write_of_request_[index] = writes_.size();
    writes_.push_back(Write{std::string(req.method_string()), r.collection->path, r.ns.value_or(""),
                            r.name, r.subresource, std::string(req[http::field::content_type]),
                            req.body(), 0, std::string(req[http::field::authorization])});
    ++writes_seq_;
  }

  WatchList watch_list_mode() const {
    std::lock_guard lock(mu_);
    return watch_list_;
  }

  // The object as a list item or a watch event object, appended to `out`.
  static void append_object(std::string& out, const Collection& c, const std::string& text,
                            bool with_kind) {
    if (!with_kind) {
      out += text;
      return;
    }
    out += c.kind_prefix;
    if (text.size() > 2) {
      out += ',';
      out.append(text, 1);
    } else {
      out += '}';
    }
  }

  // Requires mu_. The collection's items as of resourceVersion rv (pointers into history).
  static std::map<Key, const std::string*> snapshot(const Collection& c, std::uint64_t rv) {
    std::map<Key, const std::string*> items;
    for (const Event& e : c.history) {
      if (e.rv > rv) break;
      if (std::string_view(e.type) == "DELETED") {
        items.erase(e.key);
      } else {
        items[e.key] = e.text.get();
      }
    }
    return items;
  }

  // Requires mu_. Where a list continues (from a continue token), or the error that answers it.
  struct ListStart {
    std::uint64_t rv = 0;
    std::optional<Key> after;
    int status = 200;
    json error;
  };
  ListStart list_start(const std::string& cont) const {
    ListStart out;
    out.rv = rv_;
    if (cont.empty()) return out;
    json token;
    const auto decoded = util::decode_base64(cont);
    if (decoded) token = json::parse(*decoded, nullptr, false);
    if (!decoded || !token.is_object() || !token.contains("rv") ||
        !token["rv"].is_number_unsigned() || !token.contains("start") ||
        !token["start"].is_array() || token["start"].size() != 2 ||
        !token["start"][0].is_string() || !token["start"][1].is_string()) {
      out.status = 400;
      out.error = status_body(400, "BadRequest", "continue key is not valid");
    } else if (token["rv"].get<std::uint64_t>() < compacted_rv_) {
      out.status = 410;
      out.error = status_body(410, "Expired",
                              "The provided continue parameter is too old to display a consistent "
                              "list result. You can start a new list without the continue "
                              "parameter.");
    } else {
      out.rv = token["rv"].get<std::uint64_t>();
      out.after = Key{token["start"][0].get<std::string>(), token["start"][1].get<std::string>()};
    }
    return out;
  }

  // Requires mu_. One page of the list as of start.rv, at most `cap` items (0: all).
  std::string list_page(const Collection& c, const Route& r, const ListStart& start,
                        std::uint64_t cap, const Selector& selector) const {
    // Later pages are served as of the first page's resourceVersion; while nothing changed
    // since, that is the current state (no need to replay history).
    std::map<Key, const std::string*> replayed;
    const bool current = c.history.empty() || c.history.back().rv <= start.rv;
    if (!current) replayed = snapshot(c, start.rv);
    std::string items;
    std::size_t taken = 0, remaining = 0;
    std::optional<Key> last;
    auto take = [&](const Key& key, const std::string& text) {
      if (r.ns && key.first != *r.ns) return;
      if (!selector.matches_text(text)) return;
      if (cap > 0 && taken >= cap) {
        ++remaining;
        return;
      }
      if (taken++ > 0) items += ',';
      append_object(items, c, text, c.items_carry_kind);
      last = key;
    };
    if (current) {
      auto it = start.after ? c.items.upper_bound(*start.after) : c.items.begin();
      for (; it != c.items.end(); ++it) take(it->first, *it->second);
    } else {
      auto it = start.after ? replayed.upper_bound(*start.after) : replayed.begin();
      for (; it != replayed.end(); ++it) take(it->first, *it->second);
    }
    json meta = {{"resourceVersion", std::to_string(start.rv)}};
    if (remaining > 0) {
      json token = {{"v", "meta.k8s.io/v1"},
                    {"rv", start.rv},
                    {"start", json::array({last->first, last->second})}};
      meta["continue"] = util::encode_base64(token.dump());
      // As kube-apiserver: no count when a selector makes it unknowable without a full scan.
      if (selector.empty()) meta["remainingItemCount"] = remaining;
    }
    return "{\"kind\":" + json(c.list_kind).dump() +
           ",\"apiVersion\":" + json(c.api_version).dump() + ",\"metadata\":" + meta.dump() +
           ",\"items\":[" + items + "]}";
  }

  template <class Stream, class Param>
  After serve_list(Stream& stream, const http::request<http::string_body>& req, std::size_t index,
                   const Route& r, const Param& param, const Selector& selector) {
    const After after = req.keep_alive() ? After::kKeepAlive : After::kClose;
    std::uint64_t limit = 0;
    if (const std::string limit_s = param("limit"); !limit_s.empty()) {
      auto v = parse_rv(limit_s);
      if (!v) {
        write_json(stream, req, index, 400, status_body(400, "BadRequest", "invalid limit"));
        return after;
      }
      limit = *v;
    }
    ListStart start;
    std::string body;
    {
      std::lock_guard lock(mu_);
      start = list_start(param("continue"));
      if (start.status == 200) {
        std::uint64_t cap = limit;
        if (max_page_ > 0 && (cap == 0 || cap > max_page_)) cap = max_page_;
        body = list_page(*r.collection, r, start, cap, selector);
      }
    }
    if (start.status != 200) {
      write_json(stream, req, index, start.status, start.error);
    } else {
      write_body(stream, req, index, 200, std::move(body));
    }
    return after;
  }

  // Requires mu_.
  static std::string event_line(const Collection& c, const char* type, const std::string& text) {
    std::string line = "{\"type\":\"";
    line += type;
    line += "\",\"object\":";
    append_object(line, c, text, true);
    line += "}\n";
    return line;
  }

  // Requires mu_.
  std::string bookmark_line(const Collection& c, bool initial_events_end) const {
    json meta = {{"resourceVersion", std::to_string(rv_)}};
    if (initial_events_end) meta["annotations"] = {{"k8s.io/initial-events-end", "true"}};
    return json{{"type", "BOOKMARK"},
                {"object", {{"kind", c.kind}, {"apiVersion", c.api_version}, {"metadata", meta}}}}
               .dump() +
           "\n";
  }

  // Requires mu_. Events of the collection after `after`, filtered by namespace and selector.
  // With a selector, as kube-apiserver's watch cache: an object that starts matching is ADDED,
  // one that stops matching is DELETED (its last matching state at the event's
  // resourceVersion).
  void pending(const Collection& c, const std::optional<std::string>& ns, std::uint64_t after,
               const Selector& selector, std::string& out) const {
    auto it = std::upper_bound(c.history.begin(), c.history.end(), after,
                               [](std::uint64_t rv, const Event& e) { return rv < e.rv; });
    for (; it != c.history.end(); ++it) {
      if (ns && it->key.first != *ns) continue;
      if (selector.empty()) {
        out += event_line(c, it->type, *it->text);
        continue;
      }
      const bool now = selector.matches_text(*it->text);
      const bool before = std::string_view(it->type) == "MODIFIED" && it->prev != nullptr &&
                          selector.matches_text(*it->prev);
      if (now) {
        out +=
            event_line(c, (before || std::string_view(it->type) != "MODIFIED") ? it->type : "ADDED",
                       *it->text);
      } else if (before) {
        json last = json::parse(*it->prev);
        last["metadata"]["resourceVersion"] = std::to_string(it->rv);
        out += event_line(c, "DELETED", last.dump());
      }
    }
  }

  template <class Stream>
  static void write_chunk(Stream& stream, const std::string& data) {
    if (!data.empty()) net::write(stream, http::make_chunk(net::buffer(data)));
  }

  template <class Stream, class Param>
  After serve_watch(Stream& stream, Connection& conn, const http::request<http::string_body>& req,
                    std::size_t index, const Route& r, const Param& param,
                    std::optional<Fault> fault, bool initial_events, const Selector& selector) {
    const std::string rv_param = param("resourceVersion");
    const bool bookmarks = param("allowWatchBookmarks") == "true";
    std::optional<Clock::time_point> deadline;
    if (auto t = parse_rv(param("timeoutSeconds")); t && *t > 0) {
      deadline = Clock::now() + std::chrono::seconds(*t);
    }
    std::optional<std::uint64_t> start_rv;
    if (!rv_param.empty() && rv_param != "0") {
      start_rv = parse_rv(rv_param);
      if (!start_rv) {
        write_json(stream, req, index, 400,
                   status_body(400, "BadRequest", "invalid resourceVersion " + rv_param));
        return req.keep_alive() ? After::kKeepAlive : After::kClose;
      }
    }

    Collection& c = *r.collection;
    std::vector<Text> initial;  // the state as synthetic ADDED events, written in chunks
    std::string first;          // what the watch sends after them, before waiting
    bool expired = false;
    std::uint64_t cursor = 0, bookmark_seq = 0, close_seq = 0, drop_seq = 0;
    double stall_seconds = 0;
    {
      std::lock_guard lock(mu_);
      stall_seconds = stall_seconds_;
      if (fault == Fault::kErrorEvent410 ||
          (start_rv && !initial_events && *start_rv < compacted_rv_)) {
        expired = true;
        const std::string message = fault == Fault::kErrorEvent410
                                        ? "too old resource version (injected)"
                                        : "too old resource version: " + rv_param + " (" +
                                              std::to_string(compacted_rv_) + ")";
        first =
            json{{"type", "ERROR"}, {"object", status_body(410, "Expired", message)}}.dump() + "\n";
      } else if (!start_rv || initial_events) {
        // Synthetic ADDED events for the current state, as the real server does for "" and "0".
        for (const auto& [key, text] : c.items) {
          if (r.ns && key.first != *r.ns) continue;
          if (!selector.matches_text(*text)) continue;
          initial.push_back(text);
        }
        if (initial_events && bookmarks) first += bookmark_line(c, true);
        cursor = rv_;
      } else {
        pending(c, r.ns, *start_rv, selector, first);
        cursor = rv_;
      }
      drop_seq = drop_seq_;
      if (!expired) {
        ++c.open_watches;
        bookmark_seq = c.bookmark_seq;
        close_seq = c.close_seq;
      }
      requests_[index].status = 200;
    }
    cv_.notify_all();
    struct Unregister {
      Impl* self;
      Collection* c;
      bool active;
      ~Unregister() {
        if (!active) return;
        {
          std::lock_guard lock(self->mu_);
          --c->open_watches;
        }
        self->cv_.notify_all();
      }
    } unregister{this, &c, !expired};

    http::response<http::empty_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    res.chunked(true);
    http::response_serializer<http::empty_body> sr{res};
    http::write_header(stream, sr);

    if (expired) {
      write_chunk(stream, first);
      net::write(stream, http::make_chunk_last());
      return req.keep_alive() ? After::kKeepAlive : After::kClose;
    }
    if (fault == Fault::kStall) {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::duration<double>(stall_seconds), [&] { return stopping_; });
      lock.unlock();
      ::shutdown(conn.fd, SHUT_RDWR);
      return After::kClose;
    }
    if (fault == Fault::kGarbageLine) write_chunk(stream, "{not json\n");
    // The state is written as it is rendered, a megabyte at a time, as the real server
    // streams from its watch cache: a client can decode while the rest is on its way.
    std::string chunk;
    for (const auto& text : initial) {
      chunk += event_line(c, "ADDED", *text);
      if (chunk.size() >= (1u << 20)) {
        write_chunk(stream, chunk);
        chunk.clear();
      }
    }
    initial.clear();
    write_chunk(stream, chunk + first);
    if (fault == Fault::kDropMidStream) {
      ::shutdown(conn.fd, SHUT_RDWR);
      return After::kClose;
    }
    for (;;) {
      std::string out;
      bool end = false;
      {
        std::unique_lock lock(mu_);
        const auto ready = [&] {
          return stopping_ || (!c.history.empty() && c.history.back().rv > cursor) ||
                 c.bookmark_seq != bookmark_seq || c.close_seq != close_seq ||
                 drop_seq_ != drop_seq;
        };
        bool woke = true;
        if (deadline) {
          woke = cv_.wait_until(lock, *deadline, ready);
        } else {
          cv_.wait(lock, ready);
        }
        if (stopping_ || drop_seq_ != drop_seq) {
          lock.unlock();
          ::shutdown(conn.fd, SHUT_RDWR);
          return After::kClose;
        }
        pending(c, r.ns, cursor, selector, out);
        cursor = rv_;
        if (c.bookmark_seq != bookmark_seq) {
          bookmark_seq = c.bookmark_seq;
          if (bookmarks) out += bookmark_line(c, false);
        }
        if (c.close_seq != close_seq || !woke) end = true;
      }
      write_chunk(stream, out);
      if (end) {
        net::write(stream, http::make_chunk_last());
        return req.keep_alive() ? After::kKeepAlive : After::kClose;
      }
    }
  }

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  // Guarded by mu_:
  bool stopping_ = false;
  std::string bearer_token_;
  std::map<std::string, Collection> collections_;
  std::uint64_t rv_ = 1;
  std::uint64_t compacted_rv_ = 0;
  double stall_seconds_ = 5;
  std::size_t max_page_ = 0;
  WatchList watch_list_ = WatchList::kServe;
  std::vector<Request> requests_;
  std::vector<Write> writes_;
  std::map<std::size_t, std::size_t> write_of_request_;  // requests_ index -> writes_ index
  std::uint64_t writes_seq_ = 0;                         // bumped when writes_ changes
  std::function<void(const Write&)> before_write_;
  int unavailable_ = 0;
  std::uint64_t drop_seq_ = 0;  // bumped to drop every open watch

  // Immutable after construction:
  const bool tls_;
  std::string ca_pem_;
  std::uint16_t port_ = 0;
  std::optional<ssl::context> ssl_ctx_;
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::thread acceptor_thread_;

  std::mutex conns_mu_;
  std::list<std::shared_ptr<Connection>> conns_;  // guarded by conns_mu_
};

FakeApiServer::FakeApiServer(FakeApiServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
FakeApiServer::~FakeApiServer() = default;

FakeReviews& FakeApiServer::reviews() { return impl_->reviews_; }

std::uint16_t FakeApiServer::port() const { return impl_->port(); }
std::string FakeApiServer::url() const { return impl_->url(); }
std::string FakeApiServer::ca_pem() const { return impl_->ca_pem(); }
void FakeApiServer::set_bearer_token(std::string token) {
  impl_->set_bearer_token(std::move(token));
}
void FakeApiServer::add_collection(const std::string& path, const std::string& list_kind,
                                   const std::string& api_version, bool items_carry_kind) {
  impl_->add_collection(path, list_kind, api_version, items_carry_kind);
}
void FakeApiServer::upsert(const std::string& path, nlohmann::json object) {
  impl_->upsert(path, std::move(object));
}
void FakeApiServer::remove(const std::string& path, const std::string& ns,
                           const std::string& name) {
  impl_->remove(path, ns, name);
}
nlohmann::json FakeApiServer::objects(const std::string& path) const {
  return impl_->objects(path);
}
std::string FakeApiServer::resource_version() const { return impl_->resource_version(); }
void FakeApiServer::compact() { impl_->compact(); }
void FakeApiServer::inject(const std::string& path, Fault fault, int count) {
  impl_->inject(path, fault, count);
}
void FakeApiServer::set_stall_seconds(double s) { impl_->set_stall_seconds(s); }
void FakeApiServer::bookmark(const std::string& path) { impl_->bookmark(path); }
void FakeApiServer::close_watches(const std::string& path) { impl_->close_watches(path); }
std::size_t FakeApiServer::open_watches(const std::string& path) const {
  return impl_->open_watches(path);
}
bool FakeApiServer::wait_for_requests(const std::string& prefix, std::size_t n,
                                      double timeout_seconds) const {
  return impl_->wait_for_requests(prefix, n, timeout_seconds);
}
bool FakeApiServer::wait_for_watches(const std::string& path, std::size_t n,
                                     double timeout_seconds) const {
  return impl_->wait_for_watches(path, n, timeout_seconds);
}
std::vector<FakeApiServer::Request> FakeApiServer::requests() const { return impl_->requests(); }
void FakeApiServer::set_max_page(std::size_t n) { impl_->set_max_page(n); }
void FakeApiServer::set_watch_list(WatchList mode) { impl_->set_watch_list(mode); }
void FakeApiServer::set_status_subresource(const std::string& path, bool enabled) {
  impl_->set_status_subresource(path, enabled);
}
nlohmann::json FakeApiServer::object(const std::string& path, const std::string& ns,
                                     const std::string& name) const {
  return impl_->object(path, ns, name);
}
void FakeApiServer::inject_write(const std::string& path, Fault fault, int count) {
  impl_->inject_write(path, fault, count);
}
std::vector<FakeApiServer::Write> FakeApiServer::writes() const { return impl_->writes(); }
bool FakeApiServer::wait_for_writes(std::function<bool(const std::vector<Write>&)> pred,
                                    double timeout_seconds) const {
  return impl_->wait_for_writes(pred, timeout_seconds);
}
void FakeApiServer::set_before_write(std::function<void(const Write&)> hook) {
  impl_->set_before_write(std::move(hook));
}
void FakeApiServer::set_unavailable(int status) { impl_->set_unavailable(status); }

}  // namespace tollgate::testing
