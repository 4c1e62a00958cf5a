#include "tollgate/index/index.h"

#include <algorithm>

#include "tollgate/compile/compile.h"

namespace tollgate::index {

namespace {

bool same_policy(const policy::Policy& a, const std::string& ns, const std::string& name) {
  return a.namespace_ == ns && a.name == name;
}

void append_field(std::string& key, std::string_view s) {
  key += std::to_string(s.size());
  key += ':';
  key += s;
}

}  // namespace

Index::Index(policy::MeshConfig mesh) : mesh_(std::move(mesh)) {}
Index::~Index() = default;

bool Index::synced() const {
  return std::all_of(std::begin(synced_), std::end(synced_), [](bool b) { return b; });
}

Index::Changes Index::take_changes() {
  Changes c = std::move(changes_);
  changes_ = Changes{};
  return c;
}

const Index::PodMap* Index::pods(const std::string& ns) const {
  auto it = ns_.find(ns);
  return it == ns_.end() ? nullptr : &it->second.pods;
}

const Group* Index::group(std::uint64_t id) const {
  auto it = groups_by_id_.find(id);
  return it == groups_by_id_.end() ? nullptr : it->second;
}

IndexStats Index::stats() const {
  IndexStats s;
  for (const auto& [name, st] : ns_) s.pods += st.pods.size();
  s.policies = all_policies_.size();
  s.groups = groups_by_id_.size();
  s.shapes = shapes_.size();
  s.events = events_;
  s.ignored_pods = ignored_pods_;
  return s;
}

void Index::apply(Event event) {
  ++events_;
  const int k = static_cast<int>(event.kind);
  switch (event.type) {
    case Event::Type::kHealth:
      if (health_[k].healthy != event.healthy || health_[k].since.time_since_epoch().count() == 0) {
        health_[k].since = std::chrono::system_clock::now();
      }
      health_[k].healthy = event.healthy;
      health_[k].message = std::move(event.message);
      changes_.other = true;
      return;
    case Event::Type::kReplace:
      if (!health_[k].healthy) {
        health_[k] = Health{true, "listed", std::chrono::system_clock::now()};
      }
      replace(event.kind, event.objects);
      if (!synced_[k]) {
        synced_[k] = true;
        changes_.other = true;
      }
      return;
    case Event::Type::kUpsert:
    case Event::Type::kDelete:
      break;
  }
  const bool del = event.type == Event::Type::kDelete;
  for (auto& o : event.objects) {
    if (auto* pod = std::get_if<PodObject>(&o)) {
      if (del) {
        delete_pod(pod->namespace_, pod->name);
      } else {
        upsert_pod(std::move(*pod));
      }
    } else if (auto* pol = std::get_if<PolicyObject>(&o)) {
      if (!pol->policy) continue;
      if (del) {
        delete_policy(pol->policy->namespace_, pol->policy->name);
      } else {
        upsert_policy(std::move(*pol));
      }
    } else if (auto* named = std::get_if<NamedObject>(&o)) {
      const std::string key = object_key(o);
      auto& set = event.kind == Kind::kNamespace ? namespace_names_ : service_accounts_;
      const bool changed = del ? set.erase(key) > 0 : set.insert(key).second;
      changes_.other = changes_.other || changed;
      (void)named;
    }
  }
}

void Index::replace(Kind kind, std::vector<Object>& objects) {
  if (kind == Kind::kPod) {
    std::set<std::pair<std::string_view, std::string_view>> present;
    for (const auto& o : objects) {
      if (const auto* pod = std::get_if<PodObject>(&o)) present.emplace(pod->namespace_, pod->name);
    }
    std::vector<std::pair<std::string, std::string>> gone;
    for (const auto& [ns, st] : ns_) {
      for (const auto& [name, rec] : st.pods) {
        if (!present.contains({ns, name})) gone.emplace_back(ns, name);
      }
    }
    for (const auto& [ns, name] : gone) delete_pod(ns, name);
    for (auto& o : objects) {
      if (auto* pod = std::get_if<PodObject>(&o)) upsert_pod(std::move(*pod));
    }
  } else if (kind == Kind::kPolicy) {
    std::set<std::string> present;
    for (const auto& o : objects) {
      if (const auto* p = std::get_if<PolicyObject>(&o); p != nullptr && p->policy) {
        present.insert(p->policy->key());
      }
    }
    std::vector<std::pair<std::string, std::string>> gone;
    for (const auto& [key, p] : all_policies_) {
      if (!present.contains(key)) gone.emplace_back(p->namespace_, p->name);
    }
    for (const auto& [ns, name] : gone) delete_policy(ns, name);
    for (auto& o : objects) {
      if (auto* p = std::get_if<PolicyObject>(&o); p != nullptr && p->policy) {
        upsert_policy(std::move(*p));
      }
    }
  } else {
    std::set<std::string> next;
    for (const auto& o : objects) next.insert(object_key(o));
    auto& set = kind == Kind::kNamespace ? namespace_names_ : service_accounts_;
    if (set != next) {
      set = std::move(next);
      changes_.other = true;
    }
  }
}

ShapeRec* Index::intern(PodObject& pod) {
  std::string key;
  append_field(key, pod.namespace_);
  append_field(key, pod.service_account);
  for (const auto& [k, v] : pod.labels) {
    append_field(key, k);
    append_field(key, v);
  }
  key += '|';
  for (const auto& p : pod.ports) {
    key += std::to_string(p.number);
    append_field(key, p.name);
  }
  auto [it, inserted] = shapes_.try_emplace(key);
  if (inserted) {
    auto rec = std::make_unique<ShapeRec>();
    auto w = std::make_shared<policy::Workload>();
    w->namespace_ = pod.namespace_;
    w->labels.insert(std::make_move_iterator(pod.labels.begin()),
                     std::make_move_iterator(pod.labels.end()));
    w->service_account = pod.service_account;
    w->ports = std::move(pod.ports);
    rec->shape = std::move(w);
    rec->key = std::move(key);
    assign(*rec, group_for(*rec->shape));
    ns_[rec->shape->namespace_].shapes.insert(rec.get());
    it->second = std::move(rec);
  }
  return it->second.get();
}

void Index::release(ShapeRec* shape) {
  if (shape == nullptr) return;
  shape->group->pods--;
  if (--shape->pods > 0) return;
  assign(*shape, nullptr);
  ns_[shape->shape->namespace_].shapes.erase(shape);
  shapes_.erase(shape->key);  // destroys *shape
}

Group* Index::group_for(const policy::Workload& w) {
  std::vector<std::shared_ptr<const policy::Policy>> applicable;
  auto collect = [&](const std::string& ns) {
    auto it = ns_.find(ns);
    if (it == ns_.end()) return;
    for (const auto& [name, rec] : it->second.policies) {
      if (compile::applies_to(*rec.policy, w, mesh_)) applicable.push_back(rec.policy);
    }
  };
  collect(w.namespace_);
  if (w.namespace_ != mesh_.root_namespace) collect(mesh_.root_namespace);
  std::sort(applicable.begin(), applicable.end(), [](const auto& a, const auto& b) {
    return std::tie(a->namespace_, a->name) < std::tie(b->namespace_, b->name);
  });
  std::string key;
  append_field(key, w.namespace_);
  for (const auto& p : applicable) {
    append_field(key, p->namespace_);
    append_field(key, p->name);
  }
  auto [it, inserted] = groups_by_key_.try_emplace(key);
  if (inserted) {
    auto g = std::make_unique<Group>();
    g->id = next_group_++;
    g->key = key;
    g->namespace_ = w.namespace_;
    g->policies = std::move(applicable);
    groups_by_id_[g->id] = g.get();
    ns_[g->namespace_].groups.insert(g.get());
    changes_.groups.insert(g->id);
    it->second = std::move(g);
  }
  return it->second.get();
}

// Moves a shape (and its pods) to group `g`; a group left without shapes goes away.
void Index::assign(ShapeRec& shape, Group* g) {
  Group* old = shape.group;
  if (old == g) return;
  shape.group = g;
  if (g != nullptr) {
    g->shapes++;
    g->pods += shape.pods;
  }
  if (old != nullptr) {
    old->pods -= shape.pods;
    if (--old->shapes == 0) {
      changes_.removed_groups.insert(old->id);
      changes_.groups.erase(old->id);
      groups_by_id_.erase(old->id);
      ns_[old->namespace_].groups.erase(old);
      groups_by_key_.erase(old->key);  // destroys *old
    }
  }
}

UidDigest uid_digest(std::string_view uid) {
  if (uid.empty()) return {};
  return {compile::hash_bytes(uid, 1), compile::hash_bytes(uid, 2)};
}

void Index::upsert_pod(PodObject pod) {
  if (!pod.is_workload()) {
    ++ignored_pods_;
    delete_pod(pod.namespace_, pod.name);
    return;
  }
  std::string ips;
  for (const auto& ip : pod.ips) {
    if (!ips.empty()) ips += ',';
    ips += ip;
  }
  auto& st = ns_[pod.namespace_];
  auto it = st.pods.find(std::string_view(pod.name));
  const UidDigest uid = uid_digest(pod.uid);
  if (it != st.pods.end() && it->second.info->ips == ips && it->second.info->uid == uid) {
    // Same shape? Compare without interning (interning may create a shape).
    const policy::Workload& w = *it->second.shape->shape;
    if (w.service_account == pod.service_account && w.ports.size() == pod.ports.size() &&
        w.labels.size() == pod.labels.size() &&
        std::equal(pod.labels.begin(), pod.labels.end(), w.labels.begin(),
                   [](const auto& a, const auto& b) {
                     return a.first == b.first && a.second == b.second;
                   }) &&
        std::equal(pod.ports.begin(), pod.ports.end(), w.ports.begin(),
                   [](const auto& a, const auto& b) {
                     return a.number == b.number && a.name == b.name;
                   })) {
      return;  // nothing the index cares about changed
    }
  }
  changes_.namespaces.insert(pod.namespace_);
  ShapeRec* shape = intern(pod);
  shape->pods++;
  shape->group->pods++;
  auto info = std::make_shared<PodInfo>();
  info->name = std::move(pod.name);
  info->uid = uid;
  info->shape = shape->shape;
  info->ips = std::move(ips);
  if (it == st.pods.end()) {
    const std::string_view key = info->name;
    st.pods.emplace(key, PodRec{std::move(info), shape});
    return;
  }
  ShapeRec* old_shape = it->second.shape;
  auto node = st.pods.extract(it);
  node.mapped().info = std::move(info);
  node.mapped().shape = shape;
  node.key() = node.mapped().info->name;
  st.pods.insert(std::move(node));
  release(old_shape);
}

void Index::delete_pod(const std::string& ns, const std::string& name) {
  auto nit = ns_.find(ns);
  if (nit == ns_.end()) return;
  auto it = nit->second.pods.find(std::string_view(name));
  if (it == nit->second.pods.end()) return;
  ShapeRec* shape = it->second.shape;
  nit->second.pods.erase(it);
  release(shape);
  changes_.namespaces.insert(ns);
}

void Index::upsert_policy(PolicyObject p) {
  const std::string ns = p.policy->namespace_;
  const std::string name = p.policy->name;
  auto& st = ns_[ns];
  auto it = st.policies.find(name);
  if (it != st.policies.end() && it->second.fingerprint == p.fingerprint) return;
  std::shared_ptr<const policy::Policy> before =
      it == st.policies.end() ? nullptr : it->second.policy;
  st.policies[name] = PolicyRec{p.policy, std::move(p.fingerprint)};
  all_policies_[p.policy->key()] = p.policy;
  policy_changed(ns, name, before.get(), p.policy.get());
}

void Index::delete_policy(const std::string& ns, const std::string& name) {
  auto nit = ns_.find(ns);
  if (nit == ns_.end()) return;
  auto it = nit->second.policies.find(name);
  if (it == nit->second.policies.end()) return;
  std::shared_ptr<const policy::Policy> before = it->second.policy;
  nit->second.policies.erase(it);
  all_policies_.erase(ns + "/" + name);
  policy_changed(ns, name, before.get(), nullptr);
}

void Index::policy_changed(const std::string& ns, const std::string& name,
                           const policy::Policy* before, const policy::Policy* after) {
  changes_.policies = true;
  changes_.policy_namespaces.insert(ns);
  const bool everywhere = ns == mesh_.root_namespace;
  // Groups that hold the policy get its new version and must be recompiled.
  std::shared_ptr<const policy::Policy> next;
  if (after != nullptr) next = all_policies_[after->key()];
  auto update_group = [&](Group& g) {
    for (auto& p : g.policies) {
      if (same_policy(*p, ns, name)) {
        if (next) p = next;
        changes_.groups.insert(g.id);
        changes_.namespaces.insert(g.namespace_);
        break;
      }
    }
  };
  // Shapes (and so pods) selected before or after the change get their group recomputed.
  std::vector<ShapeRec*> moved;
  auto check_shape = [&](ShapeRec* shape) {
    const policy::Workload& w = *shape->shape;
    const bool was = before != nullptr && compile::applies_to(*before, w, mesh_);
    const bool is = after != nullptr && compile::applies_to(*after, w, mesh_);
    if (was || is) moved.push_back(shape);
  };
  if (everywhere) {
    for (auto& [key, g] : groups_by_key_) update_group(*g);
    for (auto& [key, shape] : shapes_) check_shape(shape.get());
  } else if (auto it = ns_.find(ns); it != ns_.end()) {
    for (Group* g : it->second.groups) update_group(*g);
    for (ShapeRec* shape : it->second.shapes) check_shape(shape);
  }
  // In a stable order, so that group ids do not depend on hashing.
  std::sort(moved.begin(), moved.end(),
            [](const ShapeRec* a, const ShapeRec* b) { return a->key < b->key; });
  for (ShapeRec* shape : moved) {
    Group* g = group_for(*shape->shape);
    if (g != shape->group) {
      assign(*shape, g);
      changes_.namespaces.insert(shape->shape->namespace_);
    }
  }
}

}  // namespace tollgate::index
