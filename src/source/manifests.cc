#include "tollgate/source/manifests.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace tollgate::source {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr std::uintmax_t kMaxFileBytes = 16u << 20;

std::string str_at(const json& o, std::initializer_list<const char*> path) {
  const json* cur = &o;
  for (const char* k : path) {
    if (!cur->is_object()) return "";
    auto it = cur->find(k);
    if (it == cur->end()) return "";
    cur = &*it;
  }
  return cur->is_string() ? cur->get<std::string>() : "";
}

const json* at(const json& o, std::initializer_list<const char*> path) {
  const json* cur = &o;
  for (const char* k : path) {
    if (!cur->is_object()) return nullptr;
    auto it = cur->find(k);
    if (it == cur->end()) return nullptr;
    cur = &*it;
  }
  return cur;
}

void labels_of(const json* meta, policy::Workload& w, ClusterState& s, const std::string& origin) {
  if (meta == nullptr) return;
  const json* labels = at(*meta, {"labels"});
  if (labels == nullptr || labels->is_null()) return;
  if (!labels->is_object()) {
    s.errors.push_back(origin + ": metadata.labels must be a map");
    return;
  }
  for (const auto& [k, v] : labels->items()) {
    if (v.is_string()) w.labels[k] = v.get<std::string>();
  }
}

void add_pod_like(ClusterState& s, const json& o, const json* template_, const std::string& ns,
                  const std::string& origin) {
  policy::Workload w;
  w.namespace_ = ns;
  w.name = str_at(o, {"metadata", "name"});
  if (template_ == nullptr) {
    s.errors.push_back(origin + ": " + w.name + " has no pod template");
    return;
  }
  labels_of(at(*template_, {"metadata"}), w, s, origin);
  const json* spec = at(*template_, {"spec"});
  if (spec != nullptr && spec->is_object()) {
    std::string sa = str_at(*spec, {"serviceAccountName"});
    if (sa.empty()) sa = str_at(*spec, {"serviceAccount"});
    if (!sa.empty()) w.service_account = sa;
    if (auto cs = spec->find("containers"); cs != spec->end() && cs->is_array()) {
      for (const auto& c : *cs) {
        const json* ports = at(c, {"ports"});
        if (ports == nullptr || !ports->is_array()) continue;
        for (const auto& p : *ports) {
          const json* num = at(p, {"containerPort"});
          if (num == nullptr || !num->is_number_integer()) continue;
          w.ports.push_back({num->get<int>(), str_at(p, {"name"})});
        }
      }
    }
    auto hn = spec->find("hostNetwork");
    if (hn != spec->end() && hn->is_boolean() && hn->get<bool>()) return;  // not a workload
  }
  s.workloads.push_back(std::move(w));
}

}  // namespace

void add_object(ClusterState& s, const json& o, const std::string& origin) {
  if (!o.is_object()) {
    s.errors.push_back(origin + ": not an object");
    return;
  }
  const std::string kind = str_at(o, {"kind"});
  std::string ns = str_at(o, {"metadata", "namespace"});
  if (ns.empty()) ns = "default";
  const std::string name = str_at(o, {"metadata", "name"});
  if (policy::is_authorization_policy(o)) {
    s.policies.push_back(policy::parse_policy(o));
    s.policy_origins.push_back(origin);
    s.policy_fingerprints.push_back(policy::policy_fingerprint(o));
    s.namespaces.insert(s.policies.back().namespace_);
  } else if (kind == "Pod") {
    add_pod_like(s, o, &o, ns, origin);
    s.namespaces.insert(ns);
  } else if (kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" ||
             kind == "ReplicaSet" || kind == "Job") {
    add_pod_like(s, o, at(o, {"spec", "template"}), ns, origin);
    s.namespaces.insert(ns);
  } else if (kind == "CronJob") {
    add_pod_like(s, o, at(o, {"spec", "jobTemplate", "spec", "template"}), ns, origin);
    s.namespaces.insert(ns);
  } else if (kind == "Service") {
    policy::Service svc;
    svc.namespace_ = ns;
    svc.name = name;
    if (const json* sel = at(o, {"spec", "selector"}); sel != nullptr && sel->is_object()) {
      for (const auto& [k, v] : sel->items()) {
        if (v.is_string()) svc.selector[k] = v.get<std::string>();
      }
    }
    if (const json* ports = at(o, {"spec", "ports"}); ports != nullptr && ports->is_array()) {
      for (const auto& p : *ports) {
        policy::ServicePort sp;
        if (const json* n = at(p, {"port"}); n != nullptr && n->is_number_integer()) {
          sp.port = n->get<int>();
        }
        if (const json* t = at(p, {"targetPort"}); t != nullptr) {
          sp.target_port = t->is_string()           ? t->get<std::string>()
                           : t->is_number_integer() ? std::to_string(t->get<int>())
                                                    : "";
        }
        sp.name = str_at(p, {"name"});
        sp.app_protocol = str_at(p, {"appProtocol"});
        svc.ports.push_back(std::move(sp));
      }
    }
    s.services.push_back(std::move(svc));
    s.namespaces.insert(ns);
  } else if (kind == "ServiceAccount") {
    s.service_accounts.insert(ns + "/" + name);
    s.namespaces.insert(ns);
  } else if (kind == "Namespace") {
    s.namespaces.insert(name);
  } else {
    ++s.ignored;
  }
}

std::vector<std::string> list_files(const std::vector<std::string>& paths,
                                    std::vector<std::string>& errors) {
  std::vector<std::string> files;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> found;
      for (fs::recursive_directory_iterator
               it(p, fs::directory_options::follow_directory_symlink, ec),
           end;
           !ec && it != end; it.increment(ec)) {
        const auto& e = *it;
        const std::string fname = e.path().filename().string();
        if (!fname.empty() && (fname[0] == '.' || fname[0] == '_')) {
          if (e.is_directory()) it.disable_recursion_pending();
          continue;  // hidden files and ConfigMap-style ..data directories
        }
        const std::string ext = e.path().extension().string();
        if (e.is_regular_file() && (ext == ".yaml" || ext == ".yml" || ext == ".json")) {
          found.push_back(e.path().string());
        }
      }
      if (ec) errors.push_back(p + ": " + ec.message());
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::exists(p, ec)) {
      files.push_back(p);
    } else {
      errors.push_back(p + ": no such file or directory");
    }
  }
  return files;
}

util::Result<std::vector<policy::Document>> read_file(const std::string& f) {
  std::error_code ec;
  const auto size = fs::file_size(f, ec);
  if (ec) return util::make_error(f + ": " + ec.message());
  if (size > kMaxFileBytes) return util::make_error(f + ": larger than 16 MiB, not read");
  std::ifstream in(f, std::ios::binary);
  if (!in) return util::make_error(f + ": cannot be read");
  std::ostringstream buf;
  buf << in.rdbuf();
  return policy::parse_documents(buf.str(), f);
}

void load_paths(ClusterState& s, const std::vector<std::string>& paths) {
  for (const auto& f : list_files(paths, s.errors)) {
    auto docs = read_file(f);
    if (!docs.ok()) {
      s.errors.push_back(docs.error().message);
      continue;
    }
    for (const auto& d : *docs) add_object(s, d.object, d.origin);
  }
}

}  // namespace tollgate::source
