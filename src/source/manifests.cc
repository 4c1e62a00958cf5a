#include "tollgate/source/manifests.h"

#include <algorithm>
#include <filesystem>

#include "tollgate/util/file.h"

namespace tollgate::source {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// A manifest without metadata.namespace means kubectl's default namespace.
constexpr index::DecodeOptions kManifest{"default"};

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

// A Service, for the protocol lint infers per port. Only manifests carry Services.
policy::Service decode_service(const json& o) {
  policy::Service svc;
  svc.namespace_ = str_at(o, {"metadata", "namespace"});
  if (svc.namespace_.empty()) svc.namespace_ = kManifest.default_namespace;
  svc.name = str_at(o, {"metadata", "name"});
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
  return svc;
}

// One object, decoded by its kind's rule.
util::Status add(FileObjects& f, const policy::ObjectText& o) {
  auto fail = [&](const std::string& why) { return util::make_error(o.origin + ": " + why); };
  if (o.kind == "AuthorizationPolicy") {
    auto p = index::decode_policy(o.json, kManifest);
    if (!p.ok()) return fail(p.error().message);
    f.namespaces.push_back(p->policy->namespace_);
    f.policies.push_back(std::move(*p));
    f.policy_origins.push_back(o.origin);
  } else if (o.kind == "Pod" || index::is_pod_controller(o.kind)) {
    auto p = o.kind == "Pod" ? index::decode_pod(o.json, kManifest)
                             : index::decode_pod_template(o.json, o.kind, kManifest);
    if (!p.ok()) return fail(p.error().message);
    f.namespaces.push_back(p->namespace_);
    f.pods.push_back(std::move(*p));
  } else if (o.kind == "ServiceAccount" || o.kind == "Namespace") {
    const bool sa = o.kind == "ServiceAccount";
    auto n = index::decode_named(o.json, sa, kManifest);
    if (!n.ok()) return fail(n.error().message);
    if (sa) {
      f.namespaces.push_back(n->namespace_);
      f.service_accounts.push_back(std::move(*n));
    } else {
      f.namespaces.push_back(std::move(n->name));
    }
  } else if (o.kind == "Service") {
    const json j = json::parse(o.json, nullptr, false);
    if (j.is_discarded()) return fail("not valid JSON");
    f.services.push_back(decode_service(j));
    f.namespaces.push_back(f.services.back().namespace_);
  } else {
    ++f.ignored;
  }
  return util::ok();
}

}  // namespace

util::Result<FileObjects> read_text(std::string_view text, const std::string& origin) {
  FileObjects f;
  TOLLGATE_TRY_STATUS(policy::for_each_object(
      text, origin, [&](const policy::ObjectText& o) { return add(f, o); }));
  std::sort(f.namespaces.begin(), f.namespaces.end());
  f.namespaces.erase(std::unique(f.namespaces.begin(), f.namespaces.end()), f.namespaces.end());
  return f;
}

util::Result<FileObjects> read_file(const std::string& path, const ReadOptions& options) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (!ec && size > options.max_file_bytes) {
    return util::make_error(path + ": " + std::to_string(size) + " bytes, more than the limit of " +
                            std::to_string(options.max_file_bytes) + " (--max-manifest-bytes)");
  }
  TOLLGATE_TRY(text, util::read_file(path, options.max_file_bytes));
  return read_text(text, path);
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

void add_objects(ClusterState& s, FileObjects f) {
  for (std::size_t i = 0; i < f.policies.size(); ++i) {
    s.policies.push_back(*f.policies[i].policy);
    s.policy_origins.push_back(std::move(f.policy_origins[i]));
    s.policy_fingerprints.push_back(std::move(f.policies[i].fingerprint));
  }
  for (auto& pod : f.pods) {
    if (!pod.is_workload()) continue;
    policy::Workload w;
    w.namespace_ = std::move(pod.namespace_);
    w.name = std::move(pod.name);
    w.labels.insert(pod.labels.begin(), pod.labels.end());
    w.service_account = std::move(pod.service_account);
    w.ports = std::move(pod.ports);
    s.workloads.push_back(std::move(w));
  }
  for (auto& svc : f.services) s.services.push_back(std::move(svc));
  for (const auto& sa : f.service_accounts)
    s.service_accounts.insert(sa.namespace_ + "/" + sa.name);
  s.namespaces.insert(f.namespaces.begin(), f.namespaces.end());
  s.ignored += f.ignored;
}

void load_paths(ClusterState& s, const std::vector<std::string>& paths,
                const ReadOptions& options) {
  for (const auto& f : list_files(paths, s.errors)) {
    auto objects = read_file(f, options);
    if (!objects.ok()) {
      s.errors.push_back(objects.error().message);
      continue;
    }
    add_objects(s, std::move(*objects));
  }
}

}  // namespace tollgate::source
