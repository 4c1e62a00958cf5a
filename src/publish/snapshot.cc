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

const PodEntry* Snapshot::find_ip(std::string_view ip) const {
  if (!by_ip) return nullptr;
  auto it = std::lower_bound(by_ip->begin(), by_ip->end(), ip,
                             [](const auto& e, std::string_view v) { return e.first < v; });
  if (it == by_ip->end() || it->first != ip) return nullptr;
  return find(it->second->shape->namespace_, it->second->name);
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

SnapshotBuilder::Result SnapshotBuilder::build(const index::Index& index,
                                               const index::Index::Changes& changes) {
  Result out;
  for (auto id : changes.removed_groups) tables_.erase(id);
  for (auto id : changes.groups) {
    const index::Group* g = index.group(id);
    if (g == nullptr) continue;
    tables_[id] = make_table_entry(*g, index.mesh());
    ++out.compiled;
  }

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
  }
  bool ips_changed = !last_;
  for (const auto& ns : changes.namespaces) {
    const index::Index::PodMap* pods = index.pods(ns);
    std::shared_ptr<const NamespaceView> before;
    if (auto it = next->namespaces.find(ns); it != next->namespaces.end()) before = it->second;
    auto view = std::make_shared<NamespaceView>();
    if (pods != nullptr) {
      view->pods.reserve(pods->size());
      std::unordered_map<const TableEntry*, bool> held;
      for (const auto& [name, rec] : *pods) {
        auto t = tables_.find(rec.group()->id);
        const TableEntry* table = t == tables_.end() ? nullptr : t->second.get();
        if (table != nullptr && held.emplace(table, true).second) {
          view->tables.push_back(t->second);
        }
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
        ips_changed = true;
        ++i;
      } else if (cmp > 0) {
        out.changed_pods.push_back(ns + "/" + view->pods[j].pod->name);
        ips_changed = true;
        ++j;
      } else {
        const auto& a = old_pods[i];
        const auto& b = view->pods[j];
        if (a.pod->ips != b.pod->ips) ips_changed = true;
        if (a.table != b.table &&
            (a.table == nullptr || b.table == nullptr || a.table->etag != b.table->etag)) {
          out.changed_pods.push_back(ns + "/" + b.pod->name);
        }
        ++i;
        ++j;
      }
    }
    if (view->pods.empty()) {
      next->namespaces.erase(ns);
    } else {
      next->namespaces[ns] = std::move(view);
    }
  }
  if (ips_changed) {
    auto by_ip = std::make_shared<Snapshot::IpIndex>();
    std::size_t count = 0;
    for (const auto& [ns, view] : next->namespaces) count += view->pods.size();
    by_ip->reserve(count);
    for (const auto& [ns, view] : next->namespaces) {
      for (const auto& e : view->pods) {
        e.pod->for_each_ip([&](std::string_view ip) { by_ip->emplace_back(ip, e.pod); });
      }
    }
    std::sort(by_ip->begin(), by_ip->end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    next->by_ip = std::move(by_ip);
  }
  if (changes.policies || !next->policies) {
    next->policies =
        std::make_shared<const std::map<std::string, std::shared_ptr<const policy::Policy>>>(
            index.policies());
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
  for (const auto& [ns, view] : next->namespaces) next->pods += view->pods.size();
  next->tables = tables_.size();
  last_ = next;
  out.snapshot = std::move(next);
  return out;
}

}  // namespace tollgate::publish
