#include "tollgate/status/reconciler.h"

#include <algorithm>
#include <charconv>

#include "tollgate/lint/lint.h"

namespace tollgate::status {
namespace {

using nlohmann::json;

// resourceVersions are opaque to clients, but every API server in use hands out decimal
// etcd revisions; when both are, an older one is recognised (a watch event that was already
// in flight when a write answered with a newer object).
bool older(const std::string& rv, const std::string& than) {
  std::uint64_t a = 0, b = 0;
  auto ra = std::from_chars(rv.data(), rv.data() + rv.size(), a);
  auto rb = std::from_chars(than.data(), than.data() + than.size(), b);
  if (rv.empty() || than.empty() || ra.ec != std::errc() || rb.ec != std::errc() ||
      ra.ptr != rv.data() + rv.size() || rb.ptr != than.data() + than.size()) {
    return false;
  }
  return a < b;
}

std::vector<Condition> ours_in(const json& conditions) {
  std::vector<Condition> out;
  if (!conditions.is_array()) return out;
  for (const auto& c : conditions) {
    if (!c.is_object()) continue;
    auto text = [&](const char* k) {
      auto it = c.find(k);
      return it != c.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    const std::string type = text("type");
    if (!type.starts_with(kTypePrefix)) continue;
    out.push_back({type, text("status"), text("reason"), text("message")});
  }
  return out;
}

json parsed(const std::string& text) {
  return text.empty() ? json() : json::parse(text, nullptr, false);
}

}  // namespace

void Reconciler::apply(const index::Event& e) {
  if (e.kind != index::Kind::kPolicy) return;
  switch (e.type) {
    case index::Event::Type::kUpsert:
      for (const auto& o : e.objects) {
        if (const auto* p = std::get_if<index::PolicyObject>(&o)) upsert(*p);
      }
      break;
    case index::Event::Type::kDelete:
      for (const auto& o : e.objects) {
        gone_.erase(index::object_key(o));
        forget(index::object_key(o));
      }
      break;
    case index::Event::Type::kReplace: {
      std::set<std::string> listed;
      for (const auto& o : e.objects) {
        if (const auto* p = std::get_if<index::PolicyObject>(&o)) {
          listed.insert(index::object_key(o));
          upsert(*p);
        }
      }
      std::erase_if(gone_, [&](const auto& kv) { return !listed.contains(kv.first); });
      for (auto it = policies_.begin(); it != policies_.end();) {
        if (!listed.contains(it->first)) {
          marked_.erase(it->first);
          it = policies_.erase(it);
          meaning_changed_ = true;
        } else {
          ++it;
        }
      }
      break;
    }
    case index::Event::Type::kHealth:
      break;
  }
  if (meaning_changed_) recompute();
}

void Reconciler::upsert(const index::PolicyObject& p) {
  if (!p.policy || !p.meta) return;
  const std::string key = p.policy->key();
  if (auto g = gone_.find(key); g != gone_.end()) {
    if (g->second == p.meta->uid) return;  // read before it went
    gone_.erase(g);                        // created again
  }
  auto it = policies_.find(key);
  if (it != policies_.end()) {
    Entry& e = it->second;
    // The same object as known, or an older one (already superseded by a write's answer).
    if (e.meta.uid == p.meta->uid && older(p.meta->resource_version, e.meta.resource_version)) {
      return;
    }
    if (e.fingerprint != p.fingerprint || e.policy->api_version != p.policy->api_version) {
      meaning_changed_ = true;
    }
    e.policy = p.policy;
    e.fingerprint = p.fingerprint;
    if (e.meta.conditions != p.meta->conditions) e.conditions = parsed(p.meta->conditions);
    e.meta = *p.meta;
  } else {
    policies_.emplace(key, Entry{p.policy, p.fingerprint, *p.meta, parsed(p.meta->conditions), {}});
    meaning_changed_ = true;
  }
  marked_.insert(key);
}

void Reconciler::observed(const std::string& key, const json& object) {
  if (!object.is_object()) return;
  const index::PolicyObject p = index::policy_object(object);
  if (p.policy->key() != key) return;
  upsert(p);
  if (meaning_changed_) recompute();
}

void Reconciler::gone(const std::string& key) {
  if (auto it = policies_.find(key); it != policies_.end()) gone_[key] = it->second.meta.uid;
  forget(key);
}

void Reconciler::forget(const std::string& key) {
  if (policies_.erase(key) > 0) meaning_changed_ = true;
  marked_.erase(key);
  if (meaning_changed_) recompute();
}

void Reconciler::mark_all() {
  for (const auto& [key, e] : policies_) marked_.insert(key);
}

std::vector<std::string> Reconciler::take_marked() {
  std::vector<std::string> out(marked_.begin(), marked_.end());
  marked_.clear();
  return out;
}

void Reconciler::recompute() {
  meaning_changed_ = false;
  // Only deny-all DENY policies can shadow; look at those alone (usually none or a few).
  std::vector<const policy::Policy*> denies;
  for (const auto& [key, e] : policies_) {
    if (e.policy->action == policy::Action::kDeny) denies.push_back(e.policy.get());
  }
  for (auto& [key, e] : policies_) {
    std::vector<policy::Finding> lint;
    if (auto f = lint::shadowed_by_deny(*e.policy, denies, mesh_)) lint.push_back(std::move(*f));
    auto want = desired_conditions(*e.policy, lint);
    if (want != e.want) {
      e.want = std::move(want);
      marked_.insert(key);
    }
  }
}

std::optional<Plan> Reconciler::plan(const std::string& key, std::string_view now) const {
  auto it = policies_.find(key);
  if (it == policies_.end()) return std::nullopt;
  const Entry& e = it->second;
  auto merged = merge_conditions(e.conditions, e.want, e.meta.generation, now);
  if (!merged) return std::nullopt;
  Plan p;
  p.key = key;
  std::string api_version = e.policy->api_version;
  if (api_version != "security.istio.io/v1beta1") api_version = "security.istio.io/v1";
  p.path = "/apis/" + api_version + "/namespaces/" + e.policy->namespace_ +
           "/authorizationpolicies/" + e.policy->name + "/status";
  p.uid = e.meta.uid;
  p.api_version = api_version;
  p.resource_version = e.meta.resource_version;
  p.patch = status_patch(*merged, e.meta.resource_version).dump();
  p.want = e.want;
  p.before = ours_in(e.conditions);
  return p;
}

}  // namespace tollgate::status
