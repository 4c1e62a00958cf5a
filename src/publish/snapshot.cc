#include "tollgate/publish/snapshot.h"

#include <algorithm>

#include "tollgate/compile/compile.h"

namespace tollgate::publish {

const PodEntry* NamespaceView::find(std::string_view pod) const {
  auto it = std::lower_bound(pods.begin(), pods.end(), pod,
                             [](const PodEntry& e, std::string_view n) { return e.pod->name < n; });
  return it != pods.end() && it->pod->name == pod ? &*it : nullptr;
}

const PodEntry* Snapshot::find(std::string_view ns, std::string_view pod) const {
  auto it = namespaces.find(ns);
  return it == namespaces.end() ? nullptr : it->second->find(pod);
}

PolicyMap::Iterator& PolicyMap::Iterator::operator++() {
  if (++inner_ == outer_->second->end()) {
    ++outer_;
    if (outer_ != end_) inner_ = outer_->second->begin();
  }
  return *this;
}

PolicyMap::const_iterator PolicyMap::begin() const {
  if (shards_.empty()) return end();
  return {shards_.begin(), shards_.end(), shards_.begin()->second->begin()};
}

PolicyMap::const_iterator PolicyMap::end() const { return {shards_.end(), shards_.end(), {}}; }

PolicyMap::const_iterator PolicyMap::find(std::string_view key) const {
  const auto slash = key.find('/');
  if (slash == std::string_view::npos) return end();
  auto shard = shards_.find(key.substr(0, slash + 1));
  if (shard == shards_.end()) return end();
  auto it = shard->second->find(key);
  if (it == shard->second->end()) return end();
  return {shard, shards_.end(), it};
}

void PolicyMap::set_namespace(const std::string& ns, std::shared_ptr<const Shard> shard) {
  const std::string prefix = ns + "/";
  if (auto it = shards_.find(prefix); it != shards_.end()) {
    size_ -= it->second->size();
    shards_.erase(it);
  }
  if (!shard || shard->empty()) return;
  size_ += shard->size();
  shards_.emplace(prefix, std::move(shard));
}

std::size_t Snapshot::ip_shard(std::string_view ip) {
  return std::hash<std::string_view>{}(ip) % kIpShards;
}

namespace {

bool ip_entry_less(const Snapshot::IpEntry& a, const Snapshot::IpEntry& b) {
  if (a.ip != b.ip) return a.ip < b.ip;
  return std::tie(a.pod->shape->namespace_, a.pod->name) <
         std::tie(b.pod->shape->namespace_, b.pod->name);
}

}  // namespace

const PodEntry* Snapshot::find_ip(std::string_view ip) const {
  if (!by_ip) return nullptr;
  const IpShard& shard = *(*by_ip)[ip_shard(ip)];
  auto it = std::lower_bound(shard.begin(), shard.end(), ip,
                             [](const IpEntry& e, std::string_view v) { return e.ip < v; });
  if (it == shard.end() || it->ip != ip) return nullptr;
  return find(it->pod->shape->namespace_, it->pod->name);
}

std::chrono::system_clock::time_point Snapshot::fresh_as_of(
    std::chrono::system_clock::time_point now) const {
  if (!synced) return {};
  auto fresh = now;
  for (const auto& h : health) {
    if (!h.healthy) fresh = std::min(fresh, h.since);
  }
  return fresh;
}

std::shared_ptr<const TableEntry> make_table_entry(const index::Group& g,
                                                   const policy::MeshConfig& mesh) {
  std::vector<const policy::Policy*> policies;
  policies.reserve(g.policies.size());
  for (const auto& p : g.policies) policies.push_back(p.get());
  auto e = std::make_shared<TableEntry>();
  e->group = g.id;
  // The group's policies are exactly those that apply to its members (the index resolved
  // them), so they are compiled as they are.
  e->table = compile::compile_selected(policies, g.namespace_, mesh);
  e->wire = compile::to_json(e->table).dump();
  e->etag = "\"" + e->table.hash + "\"";
  return e;
}

void SnapshotBuilder::compile_tables(const index::Index& index,
                                     const index::Index::Changes& changes, Result& out) {
  for (auto id : changes.removed_groups) tables_.erase(id);
  for (auto id : changes.groups) {
    const index::Group* g = index.group(id);
    if (g == nullptr) continue;
    tables_[id] = make_table_entry(*g, index.mesh());
    ++out.compiled;
  }
}

// The namespace's view from the index; which pods' tables changed, and whose IPs.
void SnapshotBuilder::rebuild_namespace(const index::Index& index, const std::string& ns,
                                        Snapshot& next, Result& out, IpChanges& ips) const {
  const index::Index::PodMap* pods = index.pods(ns);
  std::shared_ptr<const NamespaceView> before;
  if (auto it = next.namespaces.find(ns); it != next.namespaces.end()) before = it->second;
  auto view = std::make_shared<NamespaceView>();
  if (pods != nullptr) {
    view->pods.reserve(pods->size());
    std::unordered_map<const TableEntry*, bool> held;
    for (const auto& [name, rec] : *pods) {
      auto t = tables_.find(rec.group()->id);
      const TableEntry* table = t == tables_.end() ? nullptr : t->second.get();
      if (table != nullptr && held.emplace(table, true).second) view->tables.push_back(t->second);
      view->pods.push_back(PodEntry{rec.info, table});
    }
  }
  // Which pods changed: a merge of the two sorted lists.
  const std::vector<PodEntry> empty;
  const auto& old_pods = before ? before->pods : empty;
  std::size_t i = 0, j = 0;
  while (i < old_pods.size() || j < view->pods.size()) {
    const int cmp = i == old_pods.size() ? 1
                    : j == view->pods.size()
                        ? -1
                        : old_pods[i].pod->name.compare(view->pods[j].pod->name);
    if (cmp < 0) {
      out.changed_pods.push_back(ns + "/" + old_pods[i].pod->name);
      ips.removed.push_back(old_pods[i++].pod.get());
    } else if (cmp > 0) {
      out.changed_pods.push_back(ns + "/" + view->pods[j].pod->name);
      ips.added.push_back(view->pods[j++].pod.get());
    } else {
      const auto& a = old_pods[i++];
      const auto& b = view->pods[j++];
      if (a.pod != b.pod) {  // a new PodInfo (IPs or shape): its entries replace the old ones
        ips.removed.push_back(a.pod.get());
        ips.added.push_back(b.pod.get());
      }
      if (a.table != b.table &&
          (a.table == nullptr || b.table == nullptr || a.table->etag != b.table->etag)) {
        out.changed_pods.push_back(ns + "/" + b.pod->name);
      }
    }
  }
  next.pods += view->pods.size();
  next.pods -= old_pods.size();
  if (view->pods.empty()) {
    next.namespaces.erase(ns);
  } else {
    next.namespaces[ns] = std::move(view);
  }
}

// The IP index with `ips` applied: only the shards they touch are rebuilt.
std::shared_ptr<const Snapshot::IpIndex> SnapshotBuilder::apply(const Snapshot::IpIndex* before,
                                                                const IpChanges& ips) {
  static const auto kEmpty = std::make_shared<const Snapshot::IpShard>();
  auto next = before != nullptr ? std::make_shared<Snapshot::IpIndex>(*before)
                                : std::make_shared<Snapshot::IpIndex>(Snapshot::kIpShards, kEmpty);
  // shard -> (pods whose entries go, entries that come)
  std::unordered_map<std::size_t,
                     std::pair<std::vector<const index::PodInfo*>, std::vector<Snapshot::IpEntry>>>
      touched;
  for (const auto* pod : ips.removed) {
    pod->for_each_ip([&](std::string_view ip) {
      auto& gone = touched[Snapshot::ip_shard(ip)].first;
      if (gone.empty() || gone.back() != pod) gone.push_back(pod);
    });
  }
  for (const auto* pod : ips.added) {
    pod->for_each_ip([&](std::string_view ip) {
      touched[Snapshot::ip_shard(ip)].second.push_back(Snapshot::IpEntry{ip, pod});
    });
  }
  for (auto& [index, change] : touched) {
    auto& [gone, come] = change;
    std::sort(gone.begin(), gone.end());
    const Snapshot::IpShard& old = *(*next)[index];
    auto shard = std::make_shared<Snapshot::IpShard>();
    shard->reserve(old.size() + come.size());
    for (const auto& e : old) {
      if (!std::binary_search(gone.begin(), gone.end(), e.pod)) shard->push_back(e);
    }
    shard->insert(shard->end(), come.begin(), come.end());
    std::sort(shard->begin(), shard->end(), ip_entry_less);
    (*next)[index] = std::move(shard);
  }
  return next;
}

SnapshotBuilder::Result SnapshotBuilder::build(const index::Index& index,
                                               const index::Index::Changes& changes) {
  Result out;
  compile_tables(index, changes, out);
  auto next = std::make_shared<Snapshot>();
  next->revision = ++revision_;
  next->synced = index.synced();
  next->published_at = std::chrono::system_clock::now();
  next->mesh = index.mesh();
  if (last_) {
    next->namespaces = last_->namespaces;
    next->by_ip = last_->by_ip;
    next->policies = last_->policies;
    next->service_accounts = last_->service_accounts;
    next->namespace_names = last_->namespace_names;
    next->pods = last_->pods;
  }
  IpChanges ips;
  for (const auto& ns : changes.namespaces) rebuild_namespace(index, ns, *next, out, ips);
  if (!next->by_ip || !ips.removed.empty() || !ips.added.empty()) {
    next->by_ip = apply(next->by_ip.get(), ips);
  }
  if (!next->policies) next->policies = std::make_shared<const PolicyMap>();
  if (!changes.policy_namespaces.empty()) {
    auto policies = std::make_shared<PolicyMap>(*next->policies);
    for (const auto& ns : changes.policy_namespaces) {
      auto shard = std::make_shared<PolicyMap::Shard>();
      const std::string prefix = ns + "/";
      const auto& all = index.policies();
      for (auto it = all.lower_bound(prefix); it != all.end() && it->first.starts_with(prefix);
           ++it) {
        shard->emplace_hint(shard->end(), *it);
      }
      policies->set_namespace(ns, std::move(shard));
    }
    next->policies = std::move(policies);
  }
  if (changes.other || !next->service_accounts) {
    next->service_accounts =
        std::make_shared<const std::set<std::string>>(index.service_accounts());
    next->namespace_names = std::make_shared<const std::set<std::string>>(index.namespaces());
  }
  for (int k = 0; k < index::kKindCount; ++k) {
    const auto& h = index.health(static_cast<index::Kind>(k));
    next->health.push_back(Snapshot::SourceHealth{index::kind_name(static_cast<index::Kind>(k)),
                                                  h.healthy, h.message, h.since});
  }
  next->tables = tables_.size();
  last_ = next;
  out.snapshot = std::move(next);
  return out;
}

}  // namespace tollgate::publish
