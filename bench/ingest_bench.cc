// bench/ingest: the left half of the pipeline on a realistic cluster. Prints:
//   - the client's ingest rate of list JSON (parse + decode; then also index + publish) and
//     the heap per pod beyond the shared tables;
//   - start -> ready against the fake API server, in this process (streaming list, and
//     paginated lists), and as a separate `tollgate run` process with its whole RSS;
//   - a policy change selecting 1,000 pods -> published snapshot;
//   - pod churn (creates and deletes at a fixed rate) -> published, and the queue's depth;
//   - a manifest directory holding the same cluster (one file, and 100 files): start ->
//     ready, RSS, and one changed file -> a parked long-poll on an affected pod answered.
// Usage: bench/ingest [--scale 21k|100k] [--rounds N] [--churn-seconds S] [--churn-rate R]
//                     [--no-child] [--no-manifests] [--serve SECONDS]
//                     [--only client,ready,child,latency,churn,manifests]
//                     [--write-manifests DIR FILES]
// --write-manifests only writes the cluster as FILES JSON Lists into DIR (for
// `tollgate run --manifests DIR`).
// --serve only serves the generated cluster for that long, with a kubeconfig for it in
// /tmp/tollgate-bench-kubeconfig (to profile `tollgate run` against it).
#include <malloc.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ingest_child.h"
#include "ingest_cluster.h"
#include "support/fake_apiserver.h"
#include "support/run.h"
#include "tollgate/app/cluster_source.h"
#include "tollgate/k8s/watcher.h"
#include "tollgate/publish/publisher.h"
#include "tollgate/util/log.h"

using namespace tollgate;
using namespace tollgate::bench;
using namespace std::chrono_literals;

namespace {

const std::string kPodsPath = "/api/v1/pods";
const std::string kPoliciesPath = "/apis/security.istio.io/v1/authorizationpolicies";

struct Args {
  ClusterSpec spec;
  const char* scale = "21k";
  int rounds = 3;
  int churn_seconds = 10;
  int churn_rate = 1000;  // operations (creates + deletes) per second
  bool child = true;
  bool manifests = true;
  int serve_seconds = 0;  // only serve the cluster (for profiling a `tollgate run` against it)
  std::string only;       // comma-separated sections to run; empty: all
  std::string write_manifests;  // only write the cluster's manifests into this directory
  int manifest_files = 1;
  bool run(const char* section) const {
    return only.empty() ||
           ("," + only + ",").find(std::string(",") + section + ",") != std::string::npos;
  }
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (arg == "--scale") {
      const std::string s = value();
      if (s == "100k") {
        a.spec.regular_namespaces = 999;
        a.scale = "100k";
      }
    } else if (arg == "--rounds") {
      a.rounds = std::max(1, std::stoi(value()));
    } else if (arg == "--churn-seconds") {
      a.churn_seconds = std::stoi(value());
    } else if (arg == "--churn-rate") {
      a.churn_rate = std::max(1, std::stoi(value()));
    } else if (arg == "--no-child") {
      a.child = false;
    } else if (arg == "--no-manifests") {
      a.manifests = false;
    } else if (arg == "--write-manifests") {
      a.write_manifests = value();
      a.manifest_files = std::stoi(value());
    } else if (arg == "--only") {
      a.only = value();
    } else if (arg == "--serve") {
      a.serve_seconds = std::stoi(value());
    } else {
      std::fprintf(stderr, "bench/ingest: unknown argument %s\n", arg.c_str());
      std::exit(2);
    }
  }
  return a;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

std::string range(const std::vector<double>& v, const char* unit, double scale = 1) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "median %.0f %s (range %.0f-%.0f over %zu rounds)",
                percentile(v, 0.5) * scale, unit, percentile(v, 0) * scale,
                percentile(v, 1) * scale, v.size());
  return buf;
}

// ---- the client alone ----------------------------------------------------------------------

// Serves pre-built list pages from memory: the client's cost alone, without a server.
class MemoryTransport final : public k8s::Transport {
 public:
  explicit MemoryTransport(const std::vector<std::string>& pages) : pages_(pages) {}
  util::Result<k8s::ApiResponse> send(const k8s::Call& call) override {
    const std::string& target = call.target;
    const auto pos = target.find("continue=");
    const std::size_t page = pos == std::string::npos ? 0 : std::stoul(target.substr(pos + 9));
    k8s::ApiResponse r;
    r.status = 200;
    r.body = pages_[page];
    return r;
  }
  util::Result<k8s::ApiResponse> stream(const std::string&, std::chrono::milliseconds, std::size_t,
                                        const std::function<bool(std::string_view)>&) override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return cancelled_; });
    return util::make_error("cancelled");
  }
  void set_idle(std::chrono::milliseconds) override {}
  void cancel() override {
    std::lock_guard lock(mu_);
    cancelled_ = true;
    cv_.notify_all();
  }

 private:
  const std::vector<std::string>& pages_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool cancelled_ = false;
};

class DecodeHandler final : public k8s::WatchHandler {
 public:
  explicit DecodeHandler(publish::Publisher* pub) : pub_(pub) {}
  void list_begin() override { pods_.clear(); }
  void list_item(std::string_view o) override {
    auto p = index::decode_pod(o);
    if (p.ok()) pods_.emplace_back(std::move(*p));
  }
  void list_remove(std::string_view) override {}
  void list_end() override {
    done_at = Clock::now();
    count = pods_.size();
    if (pub_ != nullptr) {
      index::Event e;
      e.kind = index::Kind::kPod;
      e.type = index::Event::Type::kReplace;
      e.objects = std::move(pods_);
      pub_->submit(std::move(e));
    }
    pods_.clear();
    std::lock_guard lock(mu);
    done = true;
    cv.notify_all();
  }
  void event(k8s::EventType, std::string_view) override {}
  void health(bool, const std::string&) override {}

  Clock::time_point done_at;
  std::size_t count = 0;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;

 private:
  publish::Publisher* pub_;
  std::vector<index::Object> pods_;
};

std::vector<std::string> pages_of(const std::vector<std::string>& pods, std::size_t page) {
  std::vector<std::string> out;
  for (std::size_t start = 0; start < pods.size(); start += page) {
    const std::size_t end = std::min(pods.size(), start + page);
    std::string p = R"({"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"99999")";
    if (end < pods.size()) p += R"(,"continue":")" + std::to_string(out.size() + 1) + "\"";
    p += R"(},"items":[)";
    for (std::size_t i = start; i < end; ++i) {
      if (i > start) p += ',';
      p += pods[i];
    }
    p += "]}";
    out.push_back(std::move(p));
  }
  return out;
}

// Lists every page through the real Watcher; returns seconds until the list was complete.
double client_ingest(const std::vector<std::string>& pages, publish::Publisher* pub,
                     std::size_t* pods_out) {
  DecodeHandler handler(pub);
  k8s::WatcherOptions o;
  o.kind = "Pod";
  o.paths = {kPodsPath};
  o.streaming_list = false;
  k8s::Watcher w(o, std::make_unique<MemoryTransport>(pages), handler);
  const auto t0 = Clock::now();
  std::thread t([&] { w.run(); });
  {
    std::unique_lock lock(handler.mu);
    handler.cv.wait(lock, [&] { return handler.done; });
  }
  w.stop();
  t.join();
  *pods_out = handler.count;
  return std::chrono::duration<double>(handler.done_at - t0).count();
}

void submit_empty(publish::Publisher& pub, index::Kind k) {
  index::Event x;
  x.kind = k;
  x.type = index::Event::Type::kReplace;
  pub.submit(std::move(x));
}

void section_client(const Args& a, const std::vector<std::string>& pods,
                    const std::vector<std::string>& pages, std::size_t bytes) {
  std::vector<double> rates;
  std::size_t n = 0;
  for (int r = 0; r < a.rounds; ++r) {
    rates.push_back(static_cast<double>(bytes) / client_ingest(pages, nullptr, &n) / 1e6);
  }
  std::printf("ingest, parse + decode: %s (%zu pods; target >= 500 MB/s)\n",
              range(rates, "MB/s").c_str(), n);
  if (pods.size() <= 30000) {  // nlohmann on 100k pods would take gigabytes
    const auto t0 = Clock::now();
    std::size_t items = 0;
    for (const auto& p : pages) items += json::parse(p)["items"].size();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("  reference: nlohmann::json::parse of the same pages %.0f MB/s (%zu items)\n",
                static_cast<double>(bytes) / s / 1e6, items);
  }
  // The client into the index and a published snapshot (policies first), and the heap per pod.
  publish::Publisher pub(policy::MeshConfig{});
  pub.start();
  index::Event e;
  e.kind = index::Kind::kPolicy;
  e.type = index::Event::Type::kReplace;
  for_each_policy(a.spec, [&](const json& p) { e.objects.emplace_back(index::policy_object(p)); });
  pub.submit(std::move(e));
  submit_empty(pub, index::Kind::kServiceAccount);
  submit_empty(pub, index::Kind::kNamespace);
  const auto t0 = Clock::now();
  client_ingest(pages, &pub, &n);
  auto s = pub.wait_for([](const publish::Snapshot& x) { return x.synced; }, 300s);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("ingest, + index + publish: %.0f MB/s (%zu pods, %zu tables, %.0f ms)\n",
              static_cast<double>(bytes) / secs / 1e6, s ? s->pods : 0, s ? s->tables : 0,
              secs * 1e3);
  // Bytes per pod: the heap released when half of the pods go away (the same shapes, tables
  // and policies remain), so nothing shared is counted.
  s.reset();
  std::this_thread::sleep_for(100ms);
  malloc_trim(0);
  const std::size_t heap_full = mallinfo2().uordblks;
  index::Event half;
  half.kind = index::Kind::kPod;
  half.type = index::Event::Type::kReplace;
  for (std::size_t i = 0; i < pods.size(); i += 2) {
    half.objects.emplace_back(*index::decode_pod(pods[i]));
  }
  const std::size_t kept = half.objects.size();
  pub.submit(std::move(half));
  s = pub.wait_for([&](const publish::Snapshot& x) { return x.pods == kept; }, 120s);
  s.reset();
  std::this_thread::sleep_for(100ms);
  malloc_trim(0);
  const std::size_t heap_half = mallinfo2().uordblks;
  std::printf(
      "  heap per pod in the index and the snapshot: %.0f bytes (target <= 300 beyond the "
      "shared tables; the heap freed when half the pods leave, malloc's own count)\n",
      (static_cast<double>(heap_full) - static_cast<double>(heap_half)) /
          static_cast<double>(pods.size() - kept));
  pub.stop();
}

// ---- against the fake API server, in this process -------------------------------------------

// `on_event`, if given, sees each event before the index queue does (on a watcher's thread).
std::unique_ptr<app::ClusterSource> make_source(
    const testing::FakeApiServer& api, publish::Publisher& pub, bool streaming,
    std::function<void(const index::Event&)> on_event = {}) {
  k8s::ClusterConfig config;
  config.server = api.url();
  auto parsed = k8s::parse_server(config);
  app::ClusterSourceOptions o;
  o.streaming_list = streaming;
  return std::make_unique<app::ClusterSource>(
      *parsed,
      [&pub, on_event](index::Event e) {
        if (on_event) on_event(e);
        return pub.submit(std::move(e));
      },
      o);
}

void section_ready(const Args& a, const testing::FakeApiServer& api) {
  for (const bool streaming : {true, false}) {
    std::vector<double> secs;
    std::size_t pods = 0, tables = 0;
    for (int r = 0; r < a.rounds; ++r) {
      publish::Publisher pub(policy::MeshConfig{});
      pub.start();
      auto source = make_source(api, pub, streaming);
      const auto t0 = Clock::now();
      (void)source->start();
      auto ready = pub.wait_for([](const publish::Snapshot& x) { return x.synced; }, 300s);
      secs.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      pods = ready ? ready->pods : 0;
      tables = ready ? ready->tables : 0;
      source->stop();
      ready.reset();
      pub.stop();
      malloc_trim(0);
    }
    std::printf(
        "start -> ready against the fake API server, in process, %s: %s (%zu pods, %zu "
        "tables; the fake serves from the same 2 cores)\n",
        streaming ? "streaming list" : "paginated lists", range(secs, "ms", 1e3).c_str(), pods,
        tables);
  }
}

void section_child(const Args& a, const testing::FakeApiServer& api) {
  testing::TempDir dir;
  testing::write_file(dir.path() / "kubeconfig",
                      "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: "
                      "fake\n  cluster: {server: " +
                          api.url() +
                          "}\nusers:\n- name: me\n  user: {}\ncontexts:\n- name: fake\n  "
                          "context: {cluster: fake, user: me}\n");
  std::vector<double> ready, rss, peak, cpu, wait;
  for (int r = 0; r < a.rounds; ++r) {
    Child c;
    if (!start_child(c, TOLLGATE_BINARY, {"--kubeconfig", (dir.path() / "kubeconfig").string()},
                     dir.path().string(), 300s)) {
      std::printf("tollgate run --kubeconfig did not become ready (%s)\n", c.log.c_str());
      return;
    }
    cpu.push_back(c.cpu_seconds());
    wait.push_back(c.runqueue_wait_seconds());
    std::this_thread::sleep_for(1s);  // let the first snapshots' garbage go
    ready.push_back(c.ready_seconds);
    rss.push_back(static_cast<double>(c.rss_kib()) / 1024.0);
    peak.push_back(static_cast<double>(c.peak_kib()) / 1024.0);
  }
  std::printf("tollgate run --kubeconfig (a separate process): start -> ready %s\n",
              range(ready, "ms", 1e3).c_str());
  std::printf(
      "  its CPU time until ready %s; its threads waited for a CPU %s (the machine is "
      "shared)\n",
      range(cpu, "ms", 1e3).c_str(), range(wait, "ms", 1e3).c_str());
  std::printf("  whole-process RSS once ready: %s; peak %s (target <= 400 MiB)\n",
              range(rss, "MiB").c_str(), range(peak, "MiB").c_str());
}

// A publisher and a source that stay up for the latency and churn measurements. The listener
// times what the benchmark waits for: a changed pod of namespace "big" (a policy change), and
// churned pods (by name).
struct Live {
  publish::Publisher pub{policy::MeshConfig{}};
  std::unique_ptr<app::ClusterSource> source;
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t big_changes = 0;
  Clock::time_point big_changed_at;
  std::unordered_map<std::string, Clock::time_point> pending;  // churned pod -> when
  std::unordered_map<std::string, Clock::time_point> arrived;  // -> when its event was decoded
  std::vector<double> churn_ms, churn_wire_ms;  // to published; to decoded (the watch's part)

  explicit Live(const testing::FakeApiServer& api) {
    pub.add_listener([this](const publish::SnapshotBuilder::Result& r) {
      const auto now = Clock::now();
      std::lock_guard lock(mu);
      bool big = false;
      for (const auto& k : r.changed_pods) {
        if (!big && k.rfind("big/", 0) == 0) big = true;
        if (auto it = pending.find(k); it != pending.end()) {
          churn_ms.push_back(std::chrono::duration<double, std::milli>(now - it->second).count());
          if (auto a = arrived.find(k); a != arrived.end()) {
            churn_wire_ms.push_back(
                std::chrono::duration<double, std::milli>(a->second - it->second).count());
            arrived.erase(a);
          }
          pending.erase(it);
        }
      }
      if (big) {
        big_changes++;
        big_changed_at = now;
      }
      cv.notify_all();
    });
    pub.start();
    source = make_source(api, pub, true, [this](const index::Event& e) {
      if (e.kind != index::Kind::kPod || e.type == index::Event::Type::kReplace) return;
      const auto now = Clock::now();
      std::lock_guard lock(mu);
      for (const auto& o : e.objects) {
        const std::string key = index::object_key(o);
        if (pending.contains(key)) arrived[key] = now;
      }
    });
    (void)source->start();
    pub.wait_for([](const publish::Snapshot& x) { return x.synced; }, 300s);
  }
  ~Live() {
    source->stop();
    pub.stop();
  }
};

void section_policy_latency(testing::FakeApiServer& api, Live& live) {
  std::vector<double> lat, build;
  for (int i = 0; i < 200; ++i) {
    std::uint64_t before = 0;
    {
      std::lock_guard lock(live.mu);
      before = live.big_changes;
    }
    json p = policy_json("big", "allow-big", "big", 9000 + i);
    const auto start = Clock::now();
    api.upsert(kPoliciesPath, std::move(p));
    std::unique_lock lock(live.mu);
    if (!live.cv.wait_for(lock, 10s, [&] { return live.big_changes > before; })) {
      std::printf("policy change %d was not published within 10 s\n", i);
      return;
    }
    lat.push_back(std::chrono::duration<double, std::milli>(live.big_changed_at - start).count());
    build.push_back(live.pub.stats().last_build_seconds * 1e3);
  }
  std::printf(
      "policy change selecting 1000 pods -> published: p50 %.2f ms, p99 %.2f ms, max %.2f ms "
      "(target p99 <= 5 ms; through the fake's watch stream)\n",
      percentile(lat, 0.5), percentile(lat, 0.99), percentile(lat, 1.0));
  std::printf("  of which building the snapshot: p50 %.2f ms, p99 %.2f ms\n",
              percentile(build, 0.5), percentile(build, 0.99));
}

// Creates and deletes pods at a fixed rate (about 250 churned pods alive), each timed from
// the fake's write to the publish that carries it; the index queue's depth sampled meanwhile.
void section_churn(const Args& a, testing::FakeApiServer& api, Live& live) {
  const int ops = a.churn_seconds * a.churn_rate;
  const auto period = std::chrono::duration<double>(1.0 / a.churn_rate);
  std::vector<std::size_t> depth;
  std::atomic<bool> sampling{true};
  std::thread sampler([&] {
    while (sampling) {
      depth.push_back(live.pub.queue().size());
      std::this_thread::sleep_for(10ms);
    }
  });
  std::deque<std::pair<std::string, std::string>> alive;  // (namespace, name)
  int next_id = 0;
  const auto t0 = Clock::now();
  for (int i = 0; i < ops; ++i) {
    std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(period * i));
    if (alive.size() < 250 || i % 2 == 0) {
      const int id = next_id++;
      const std::string ns = ns_name(id % a.spec.regular_namespaces);
      const std::string app = "app-" + std::to_string(id % a.spec.apps);
      json pod = pod_json(ns, app, 500000 + id);
      const std::string name = pod["metadata"]["name"].get<std::string>();
      {
        std::lock_guard lock(live.mu);
        live.pending[ns + "/" + name] = Clock::now();
      }
      api.upsert(kPodsPath, std::move(pod));
      alive.emplace_back(ns, name);
    } else {
      const auto [ns, name] = alive.front();
      alive.pop_front();
      {
        std::lock_guard lock(live.mu);
        live.pending[ns + "/" + name] = Clock::now();
      }
      api.remove(kPodsPath, ns, name);
    }
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  std::size_t left = 0;
  {
    std::unique_lock lock(live.mu);
    live.cv.wait_for(lock, 10s, [&] { return live.pending.empty(); });
    left = live.pending.size();
  }
  sampling = false;
  sampler.join();
  const std::size_t last = std::min<std::size_t>(depth.size(), 100);
  double tail = 0;
  for (std::size_t i = depth.size() - last; i < depth.size(); ++i)
    tail += static_cast<double>(depth[i]);
  std::vector<double> d(depth.begin(), depth.end());
  std::lock_guard lock(live.mu);
  std::printf(
      "pod churn: %d creates/deletes in %.1f s (%.0f/s) -> published: p50 %.2f ms, p99 %.2f ms, "
      "max %.2f ms, %zu never published (target p99 <= 20 ms at 1000/s)\n",
      ops, elapsed, ops / elapsed, percentile(live.churn_ms, 0.5), percentile(live.churn_ms, 0.99),
      percentile(live.churn_ms, 1.0), left);
  std::printf(
      "  of which the watch (the fake's write to the decoded event): p50 %.2f ms, p99 %.2f "
      "ms, max %.2f ms\n",
      percentile(live.churn_wire_ms, 0.5), percentile(live.churn_wire_ms, 0.99),
      percentile(live.churn_wire_ms, 1.0));
  std::printf(
      "  index queue depth, sampled every 10 ms: p50 %.0f, p99 %.0f, max %.0f, mean of the "
      "last second %.1f (no growth: it stays near 0)\n",
      percentile(d, 0.5), percentile(d, 0.99), percentile(d, 1.0),
      last > 0 ? tail / static_cast<double>(last) : 0.0);
  live.churn_ms.clear();
  live.churn_wire_ms.clear();
}

// ---- manifests -----------------------------------------------------------------------------

// The cluster as kubectl exports it (no managedFields), in `files` JSON Lists by namespace.
std::size_t write_manifests(const ClusterSpec& spec, const std::filesystem::path& dir, int files) {
  std::vector<std::string> items(static_cast<std::size_t>(files));
  auto file_of = [&](const std::string& ns) -> std::size_t {
    if (ns == "big") return items.size() - 1;
    const int n = std::stoi(ns.substr(3));
    return static_cast<std::size_t>(n * files / spec.regular_namespaces);
  };
  auto add = [&](std::size_t f, const std::string& text) {
    if (!items[f].empty()) items[f] += ",\n";
    items[f] += text;
  };
  for (const auto& ns : namespaces(spec)) {
    add(file_of(ns),
        json{{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}}.dump());
  }
  for_each_pod(spec, [&](const std::string& ns, const std::string& app, int i) {
    add(file_of(ns), pod_json(ns, app, i, false).dump());
  });
  for_each_policy(spec, [&](const json& p) {
    add(file_of(p["metadata"]["namespace"].get<std::string>()), p.dump());
  });
  std::size_t bytes = 0;
  for (std::size_t f = 0; f < items.size(); ++f) {
    char name[48];
    std::snprintf(name, sizeof name, "cluster-%03u.json", static_cast<unsigned>(f % 1000));
    const std::string text =
        "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"metadata\":{},\"items\":[\n" + items[f] +
        "\n]}\n";
    bytes += text.size();
    testing::write_file(dir / name, text);
  }
  return bytes;
}

// One changed file -> the answer to a long-poll parked on a pod it affects: a small policy file
// is written next to the export (by rename, as editors do) with a new port each time.
std::vector<double> manifest_change_latency(const Child& c, const std::filesystem::path& dir,
                                            int samples) {
  const std::string target = "/v1/tables/ns-000/" + pod_name("app-0", 0);
  std::vector<double> lat;
  for (int i = 0; i < samples; ++i) {
    auto cur = testing::http_get(c.port, target);
    if (!cur || cur->status != 200) break;
    const std::string etag = header_of(cur->headers, "ETag");
    std::optional<testing::HttpReply> answer;
    Clock::time_point answered;
    std::thread poll([&] {
      answer = testing::http_get(c.port, target,
                                 "If-None-Match: " + etag + "\r\nPrefer: wait=60\r\n", 90);
      answered = Clock::now();
    });
    std::this_thread::sleep_for(100ms);  // parked
    const json p = policy_json("ns-000", "extra-deny", "app-0", 20000 + i, "DENY");
    testing::write_file(dir / "zz-extra.json.tmp", p.dump());
    const auto t0 = Clock::now();
    std::filesystem::rename(dir / "zz-extra.json.tmp", dir / "zz-extra.json");
    poll.join();
    if (!answer || answer->status != 200) break;
    lat.push_back(std::chrono::duration<double, std::milli>(answered - t0).count());
  }
  return lat;
}

void section_manifests(const Args& a) {
  for (const int files : {1, 100}) {
    testing::TempDir dir;
    const auto manifests = dir.path() / "manifests";
    std::filesystem::create_directory(manifests);
    const std::size_t bytes = write_manifests(a.spec, manifests, files);
    std::vector<double> ready, rss, peak, change, cpu, wait;
    for (int r = 0; r < a.rounds; ++r) {
      std::filesystem::remove(manifests / "zz-extra.json");
      Child c;
      if (!start_child(c, TOLLGATE_BINARY, {"--manifests", manifests.string()}, dir.path().string(),
                       300s)) {
        std::printf("tollgate run --manifests did not become ready (%s)\n", c.log.c_str());
        return;
      }
      cpu.push_back(c.cpu_seconds());
      wait.push_back(c.runqueue_wait_seconds());
      std::this_thread::sleep_for(1s);
      ready.push_back(c.ready_seconds);
      rss.push_back(static_cast<double>(c.rss_kib()) / 1024.0);
      peak.push_back(static_cast<double>(c.peak_kib()) / 1024.0);
      for (double ms : manifest_change_latency(c, manifests, 10)) change.push_back(ms);
    }
    std::printf("tollgate run --manifests, %d file%s (%.0f MB of JSON Lists): start -> ready %s\n",
                files, files == 1 ? "" : "s", static_cast<double>(bytes) / 1e6,
                range(ready, "ms", 1e3).c_str());
    std::printf("  its CPU time until ready %s; its threads waited for a CPU %s\n",
                range(cpu, "ms", 1e3).c_str(), range(wait, "ms", 1e3).c_str());
    std::printf("  whole-process RSS once ready: %s; peak %s\n", range(rss, "MiB").c_str(),
                range(peak, "MiB").c_str());
    std::printf(
        "  one changed file -> parked long-poll answered: p50 %.1f ms, p99 %.1f ms, max "
        "%.1f ms over %zu changes (target <= 100 ms; includes the 20 ms settle)\n",
        percentile(change, 0.5), percentile(change, 0.99), percentile(change, 1.0), change.size());
  }
}

}  // namespace

int main(int argc, char** argv) {
  util::set_log_level(util::LogLevel::kWarn);
  const Args a = parse_args(argc, argv);
  if (!a.write_manifests.empty()) {
    std::filesystem::create_directories(a.write_manifests);
    const auto bytes = write_manifests(a.spec, a.write_manifests, a.manifest_files);
    std::printf("wrote %.0f MB in %d files to %s\n", static_cast<double>(bytes) / 1e6,
                a.manifest_files, a.write_manifests.c_str());
    return 0;
  }
  std::printf("bench/ingest --scale %s: generating the cluster...\n", a.scale);
  testing::FakeApiServer api;
  api.add_collection(kPodsPath, "PodList", "v1", false);
  api.add_collection("/api/v1/serviceaccounts", "ServiceAccountList", "v1", false);
  api.add_collection("/api/v1/namespaces", "NamespaceList", "v1", false);
  api.add_collection(kPoliciesPath, "AuthorizationPolicyList", "security.istio.io/v1", true);
  for (const auto& ns : namespaces(a.spec)) {
    api.upsert("/api/v1/namespaces", {{"metadata", {{"name", ns}}}});
    api.upsert("/api/v1/serviceaccounts", {{"metadata", {{"name", "default"}, {"namespace", ns}}}});
  }
  std::vector<std::string> pods;
  pods.reserve(static_cast<std::size_t>(a.spec.pods()));
  for_each_pod(a.spec, [&](const std::string& ns, const std::string& app, int i) {
    json p = pod_json(ns, app, i);
    pods.push_back(p.dump());
    api.upsert(kPodsPath, std::move(p));
  });
  for_each_policy(a.spec, [&](const json& p) { api.upsert(kPoliciesPath, p); });
  const auto pages = pages_of(pods, 500);
  std::size_t bytes = 0;
  for (const auto& p : pages) bytes += p.size();
  std::printf(
      "cluster: %d pods in %zu namespaces, %d policies; pod list %.1f MB in %zu pages "
      "(%.1f KB per pod); %d rounds per figure\n",
      a.spec.pods(), namespaces(a.spec).size(), a.spec.policies(), static_cast<double>(bytes) / 1e6,
      pages.size(), static_cast<double>(bytes) / static_cast<double>(pods.size()) / 1e3, a.rounds);
  std::fflush(stdout);
  if (a.serve_seconds > 0) {
    testing::write_file("/tmp/tollgate-bench-kubeconfig",
                        "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: "
                        "fake\n  cluster: {server: " +
                            api.url() +
                            "}\nusers:\n- name: me\n  user: {}\ncontexts:\n- name: fake\n  "
                            "context: {cluster: fake, user: me}\n");
    std::printf("serving %s for %d s; kubeconfig /tmp/tollgate-bench-kubeconfig\n",
                api.url().c_str(), a.serve_seconds);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(a.serve_seconds));
    return 0;
  }
  if (a.run("client")) section_client(a, pods, pages, bytes);
  std::fflush(stdout);
  if (a.run("ready")) section_ready(a, api);
  std::fflush(stdout);
  if (a.child && a.run("child")) section_child(a, api);
  std::fflush(stdout);
  if (a.run("latency") || a.run("churn")) {
    Live live(api);
    if (a.run("latency")) section_policy_latency(api, live);
    std::fflush(stdout);
    if (a.churn_seconds > 0 && a.run("churn")) section_churn(a, api, live);
  }
  std::fflush(stdout);
  if (a.manifests && a.run("manifests")) section_manifests(a);
  return 0;
}
