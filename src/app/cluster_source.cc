#include "tollgate/app/cluster_source.h"

#include "tollgate/util/log.h"

namespace tollgate::app {

// Decodes one kind's objects into index events.
class ClusterSource::Feed final : public k8s::WatchHandler {
 public:
  Feed(index::Kind kind, Sink& sink) : kind_(kind), sink_(sink) {}

  void list_begin() override { pending_.clear(); }
  void list_item(std::string_view object) override {
    if (auto o = decode(object)) pending_.push_back(std::move(*o));
  }
  void list_remove(std::string_view object) override {
    auto o = decode(object);
    if (!o) return;
    const std::string key = index::object_key(*o);
    std::erase_if(pending_, [&](const index::Object& p) { return index::object_key(p) == key; });
  }
  void list_end() override {
    index::Event e;
    e.kind = kind_;
    e.type = index::Event::Type::kReplace;
    e.objects = std::move(pending_);
    pending_.clear();
    sink_(std::move(e));
  }
  void event(k8s::EventType type, std::string_view object) override {
    auto o = decode(object);
    if (!o) return;
    index::Event e;
    e.kind = kind_;
    e.type = type == k8s::EventType::kDeleted ? index::Event::Type::kDelete
                                              : index::Event::Type::kUpsert;
    e.objects.push_back(std::move(*o));
    sink_(std::move(e));
  }
  void health(bool healthy, const std::string& message) override {
    index::Event e;
    e.kind = kind_;
    e.type = index::Event::Type::kHealth;
    e.healthy = healthy;
    e.message = message;
    sink_(std::move(e));
  }
  std::uint64_t bad_objects() const { return bad_objects_.load(); }

 private:
  std::optional<index::Object> decode(std::string_view json) {
    auto fail = [&](const std::string& why) -> std::optional<index::Object> {
      bad_objects_++;
      util::log_warn("object skipped: it cannot be decoded",
                     {{"kind", index::kind_name(kind_)}, {"error", why}});
      return std::nullopt;
    };
    switch (kind_) {
      case index::Kind::kPod: {
        auto p = index::decode_pod(json);
        if (!p.ok()) return fail(p.error().message);
        return index::Object(std::move(*p));
      }
      case index::Kind::kPolicy: {
        auto p = index::decode_policy(json);
        if (!p.ok()) return fail(p.error().message);
        for (const auto& f : p->policy->findings) {
          if (f.severity == policy::Finding::Severity::kError) {
            util::log_warn("AuthorizationPolicy has errors; compiled fail-closed",
                           {{"policy", p->policy->key()}, {"error", f.message}});
          }
        }
        return index::Object(std::move(*p));
      }
      case index::Kind::kServiceAccount:
      case index::Kind::kNamespace: {
        auto n = index::decode_named(json, kind_ == index::Kind::kServiceAccount);
        if (!n.ok()) return fail(n.error().message);
        return index::Object(std::move(*n));
      }
    }
    return std::nullopt;
  }

  index::Kind kind_;
  Sink& sink_;
  std::vector<index::Object> pending_;
  std::atomic<std::uint64_t> bad_objects_{0};
};

ClusterSource::ClusterSource(k8s::ClusterConfig config, Sink sink, ClusterSourceOptions options)
    : config_(std::move(config)), sink_(std::move(sink)), options_(options) {}

ClusterSource::~ClusterSource() { stop(); }

util::Status ClusterSource::start() {
  tokens_ = std::make_shared<k8s::TokenSource>(config_);
  struct Spec {
    index::Kind kind;
    std::vector<std::string> paths;
  };
  const std::vector<Spec> specs = {
      {index::Kind::kPolicy,
       {"/apis/security.istio.io/v1/authorizationpolicies",
        "/apis/security.istio.io/v1beta1/authorizationpolicies"}},
      {index::Kind::kPod, {"/api/v1/pods"}},
      {index::Kind::kServiceAccount, {"/api/v1/serviceaccounts"}},
      {index::Kind::kNamespace, {"/api/v1/namespaces"}},
  };
  for (const auto& spec : specs) {
    TOLLGATE_TRY(transport, k8s::make_transport(config_, tokens_));
    feeds_.push_back(std::make_unique<Feed>(spec.kind, sink_));
    k8s::WatcherOptions o;
    o.kind = index::kind_name(spec.kind);
    o.paths = spec.paths;
    o.page_size = options_.page_size;
    o.streaming_list = options_.streaming_list;
    o.initial_events_idle = options_.initial_events_idle;
    o.min_timeout_seconds = options_.min_watch_timeout_seconds;
    o.idle_slack = options_.idle_slack;
    o.backoff = options_.backoff;
    watchers_.push_back(
        std::make_unique<k8s::Watcher>(std::move(o), std::move(transport), *feeds_.back()));
  }
  for (std::size_t i = 0; i < watchers_.size(); ++i) {
    threads_.emplace_back([this, w = watchers_[i].get(), kind = specs[i].kind] {
      auto failure = util::run_catching([w] { w->run(); });
      if (!failure && !w->stopped()) failure = "the watch loop returned before stop()";
      if (failure) {
        util::report_thread_failure(options_.failures,
                                    std::string("watcher ") + index::kind_name(kind), *failure);
      }
    });
  }
  util::log_info("watching the cluster", {{"config", config_.description}});
  return util::ok();
}

void ClusterSource::stop() {
  for (auto& w : watchers_) w->stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

std::vector<ClusterSource::KindStats> ClusterSource::stats() const {
  std::vector<KindStats> out;
  for (std::size_t i = 0; i < watchers_.size(); ++i) {
    const auto& s = watchers_[i]->stats();
    out.push_back(KindStats{index::kind_name(static_cast<index::Kind>(i)), watchers_[i]->path(),
                            s.lists.load(), s.relists.load(), s.events.load(), s.errors.load(),
                            s.bad_lines.load(), feeds_[i]->bad_objects(), s.list_bytes.load(),
                            s.streaming_lists.load(), watchers_[i]->streaming_list(),
                            watchers_[i]->state()});
  }
  return out;
}

}  // namespace tollgate::app
