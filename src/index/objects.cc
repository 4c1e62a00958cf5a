#include "tollgate/index/objects.h"

#include <simdjson.h>

#include <algorithm>

#include "tollgate/util/simdjson_helpers.h"

namespace tollgate::index {

namespace od = simdjson::ondemand;

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kPolicy:
      return "AuthorizationPolicy";
    case Kind::kPod:
      return "Pod";
    case Kind::kServiceAccount:
      return "ServiceAccount";
    case Kind::kNamespace:
      return "Namespace";
  }
  return "?";
}

std::string object_key(const Object& o) {
  struct Visitor {
    std::string operator()(const PolicyObject& p) const {
      return p.policy ? p.policy->key() : std::string();
    }
    std::string operator()(const PodObject& p) const { return p.namespace_ + "/" + p.name; }
    std::string operator()(const NamedObject& n) const {
      return n.namespace_.empty() ? n.name : n.namespace_ + "/" + n.name;
    }
  };
  return std::visit(Visitor{}, o);
}

namespace {

struct Parser {
  od::parser parser;
  std::string padded;  // the input, copied with simdjson's padding
};

Parser& thread_parser() {
  thread_local Parser p;
  return p;
}

std::string who(const std::string& ns, const std::string& name) {
  if (name.empty()) return "object";
  return ns.empty() ? name : ns + "/" + name;
}

// The field a decoder is reading, for the message when it fails.
struct Where {
  const char* path = "";
  std::string_view key;       // a map key under `path` (a view into the parsed text)
  const char* expected = "";  // "a string"
  void at(const char* p, const char* e, std::string_view k = {}) {
    path = p;
    expected = e;
    key = k;
  }
  std::string describe(simdjson::error_code err) const {
    std::string s = path;
    if (!key.empty()) {
      s += '.';
      s += key;
    }
    if (err == simdjson::INCORRECT_TYPE && *expected != '\0') return s + ": must be " + expected;
    return s + ": cannot decode: " + simdjson::error_message(err);
  }
};

// Reads a string field value; a JSON null reads as empty.
simdjson::error_code read_string(od::value v, std::string& out) {
  if (v.is_null()) {
    out.clear();
    return simdjson::SUCCESS;
  }
  std::string_view s;
  auto err = v.get_string().get(s);
  if (err) return err;
  out.assign(s);
  return simdjson::SUCCESS;
}

simdjson::error_code read_labels(od::value v, PodObject& pod, Where& w) {
  w.at("metadata.labels", "a map of strings");
  if (v.is_null()) return simdjson::SUCCESS;
  od::object labels;
  if (auto err = v.get_object().get(labels)) return err;
  for (auto label : labels) {
    std::string_view k;
    std::string_view val;
    if (auto err = label.unescaped_key().get(k)) return err;
    w.at("metadata.labels", "a string", k);
    if (auto err = label.value().get_string().get(val)) return err;
    pod.labels.emplace_back(std::string(k), std::string(val));
  }
  return simdjson::SUCCESS;
}

simdjson::error_code decode_metadata(od::object meta, PodObject& pod, Where& w) {
  for (auto field : meta) {
    std::string_view key;
    if (auto err = field.unescaped_key().get(key)) return err;
    if (key == "name") {
      w.at("metadata.name", "a string");
      if (auto err = read_string(field.value(), pod.name)) return err;
    } else if (key == "namespace") {
      w.at("metadata.namespace", "a string");
      if (auto err = read_string(field.value(), pod.namespace_)) return err;
    } else if (key == "uid") {
      w.at("metadata.uid", "a string");
      if (auto err = read_string(field.value(), pod.uid)) return err;
    } else if (key == "deletionTimestamp") {
      pod.deleting = !field.value().is_null();
    } else if (key == "labels") {
      if (auto err = read_labels(field.value(), pod, w)) return err;
    }
  }
  return simdjson::SUCCESS;
}

simdjson::error_code read_port(od::object port, policy::ContainerPort& cp, Where& w) {
  for (auto pf : port) {
    std::string_view pk;
    if (auto e = pf.unescaped_key().get(pk)) return e;
    if (pk == "containerPort") {
      w.at("spec.containers[].ports[].containerPort", "an integer");
      std::int64_t n = 0;
      if (auto e = pf.value().get_int64().get(n)) return e;
      cp.number = static_cast<int>(std::clamp<std::int64_t>(n, 0, 65535));
    } else if (pk == "name") {
      w.at("spec.containers[].ports[].name", "a string");
      if (auto e = read_string(pf.value(), cp.name)) return e;
    }
  }
  return simdjson::SUCCESS;
}

// Calls f(object) for each element of the list `v` (null: none), each of which must be an
// object; `list` and `item` name them in errors.
template <typename F>
simdjson::error_code for_each_object(od::value v, Where& w, const char* list, const char* item,
                                     F f) {
  w.at(list, "a list");
  if (v.is_null()) return simdjson::SUCCESS;
  od::array elements;
  if (auto err = v.get_array().get(elements)) return err;
  for (auto e : elements) {
    w.at(item, "an object");
    od::object o;
    if (auto err = e.get_object().get(o)) return err;
    if (auto err = f(o)) return err;
  }
  return simdjson::SUCCESS;
}

simdjson::error_code read_ports(od::value containers, PodObject& pod, Where& w) {
  return for_each_object(
      containers, w, "spec.containers", "spec.containers[]", [&](od::object container) {
        od::value ports;
        auto err = container.find_field_unordered("ports").get(ports);
        if (err == simdjson::NO_SUCH_FIELD) return simdjson::SUCCESS;
        if (err) return err;
        return for_each_object(ports, w, "spec.containers[].ports", "spec.containers[].ports[]",
                               [&](od::object port) {
                                 policy::ContainerPort cp;
                                 if (auto e = read_port(port, cp, w)) return e;
                                 pod.ports.push_back(std::move(cp));
                                 return simdjson::SUCCESS;
                               });
      });
}

// spec.serviceAccountName, else the deprecated spec.serviceAccount.
struct Accounts {
  std::string name, deprecated;
};

simdjson::error_code decode_spec(od::object spec, PodObject& pod, Accounts& sa, Where& w) {
  for (auto field : spec) {
    std::string_view key;
    if (auto err = field.unescaped_key().get(key)) return err;
    if (key == "serviceAccountName") {
      w.at("spec.serviceAccountName", "a string");
      if (auto err = read_string(field.value(), sa.name)) return err;
    } else if (key == "serviceAccount") {
      w.at("spec.serviceAccount", "a string");
      if (auto err = read_string(field.value(), sa.deprecated)) return err;
    } else if (key == "hostNetwork") {
      w.at("spec.hostNetwork", "true or false");
      od::value v = field.value();
      if (v.is_null()) continue;
      bool b = false;
      if (auto err = v.get_bool().get(b)) return err;
      pod.host_network = b;
    } else if (key == "containers") {
      if (auto err = read_ports(field.value(), pod, w)) return err;
    }
  }
  return simdjson::SUCCESS;
}

simdjson::error_code decode_status(od::object status, PodObject& pod, Where& w) {
  std::string pod_ip;
  for (auto field : status) {
    std::string_view key;
    if (auto err = field.unescaped_key().get(key)) return err;
    if (key == "phase") {
      w.at("status.phase", "a string");
      if (auto err = read_string(field.value(), pod.phase)) return err;
    } else if (key == "podIP") {
      w.at("status.podIP", "a string");
      if (auto err = read_string(field.value(), pod_ip)) return err;
    } else if (key == "podIPs") {
      auto err =
          for_each_object(field.value(), w, "status.podIPs", "status.podIPs[]", [&](od::object o) {
            std::string ip;
            w.at("status.podIPs[].ip", "a string");
            if (auto e = read_string(o["ip"], ip)) return e;
            if (!ip.empty()) pod.ips.push_back(std::move(ip));
            return simdjson::SUCCESS;
          });
      if (err) return err;
    }
  }
  if (pod.ips.empty() && !pod_ip.empty()) pod.ips.push_back(std::move(pod_ip));
  return simdjson::SUCCESS;
}

// A pod object's metadata, spec and status (a Pod, or a controller's pod template).
simdjson::error_code decode_pod_object(od::object obj, PodObject& pod, Where& w) {
  Accounts sa;
  for (auto field : obj) {
    std::string_view key;
    if (auto err = field.unescaped_key().get(key)) return err;
    if (key != "metadata" && key != "spec" && key != "status") continue;
    od::value v;
    if (auto err = field.value().get(v)) return err;
    if (v.is_null()) continue;
    w.at(key == "metadata" ? "metadata" : key == "spec" ? "spec" : "status", "an object");
    od::object sub;
    if (auto err = v.get_object().get(sub)) return err;
    simdjson::error_code err = simdjson::SUCCESS;
    if (key == "metadata") err = decode_metadata(sub, pod, w);
    if (key == "spec") err = decode_spec(sub, pod, sa, w);
    if (key == "status") err = decode_status(sub, pod, w);
    if (err) return err;
  }
  pod.service_account = !sa.name.empty()         ? sa.name
                        : !sa.deprecated.empty() ? sa.deprecated
                                                 : "default";
  return simdjson::SUCCESS;
}

// Labels sorted by key; of keys given twice, the last (as a JSON object's last member wins).
void finish_labels(PodObject& pod) {
  std::stable_sort(pod.labels.begin(), pod.labels.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  auto out = pod.labels.begin();
  for (auto it = pod.labels.begin(); it != pod.labels.end(); ++it) {
    if (std::next(it) != pod.labels.end() && std::next(it)->first == it->first) continue;
    if (out != it) *out = std::move(*it);
    ++out;
  }
  pod.labels.erase(out, pod.labels.end());
}

util::Result<PodObject> finish_pod(PodObject pod, const char* kind, const DecodeOptions& o) {
  if (pod.namespace_.empty()) pod.namespace_ = o.default_namespace;
  if (pod.name.empty() || pod.namespace_.empty()) {
    return util::make_error(std::string(kind) + " " + who(pod.namespace_, pod.name) +
                            ": metadata.name and metadata.namespace are required");
  }
  finish_labels(pod);
  return pod;
}

}  // namespace

util::Result<PodObject> decode_pod(std::string_view json, const DecodeOptions& options) {
  auto& p = thread_parser();
  PodObject pod;
  Where where;
  const simdjson::error_code err = util::guarded([&]() -> simdjson::error_code {
    od::document doc;
    if (auto e = p.parser.iterate(util::pad(p.padded, json)).get(doc)) return e;
    od::object obj;
    if (auto e = doc.get_object().get(obj)) return e;
    return decode_pod_object(obj, pod, where);
  });
  if (err) {
    return util::make_error("Pod " + who(pod.namespace_, pod.name) + ": " + where.describe(err));
  }
  return finish_pod(std::move(pod), "Pod", options);
}

bool is_pod_controller(std::string_view kind) {
  return kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" ||
         kind == "ReplicaSet" || kind == "Job" || kind == "CronJob";
}

namespace {

// The pod template of a controller's spec: spec.template, or for a CronJob
// spec.jobTemplate.spec.template. NO_SUCH_FIELD when there is none.
simdjson::error_code find_template(od::object spec, bool cronjob, od::object& out, Where& w) {
  if (cronjob) {
    w.at("spec.jobTemplate", "an object");
    od::object job;
    if (auto err = spec.find_field_unordered("jobTemplate").get_object().get(job)) return err;
    w.at("spec.jobTemplate.spec", "an object");
    if (auto err = job.find_field_unordered("spec").get_object().get(spec)) return err;
    w.at("spec.jobTemplate.spec.template", "an object");
  } else {
    w.at("spec.template", "an object");
  }
  return spec.find_field_unordered("template").get_object().get(out);
}

}  // namespace

util::Result<PodObject> decode_pod_template(std::string_view json, std::string_view kind,
                                            const DecodeOptions& options) {
  auto& p = thread_parser();
  PodObject pod;
  std::string ns, name;
  Where where;
  bool found = false;
  const simdjson::error_code err = util::guarded([&]() -> simdjson::error_code {
    od::document doc;
    if (auto e = p.parser.iterate(util::pad(p.padded, json)).get(doc)) return e;
    od::object obj;
    if (auto e = doc.get_object().get(obj)) return e;
    for (auto field : obj) {
      std::string_view key;
      if (auto e = field.unescaped_key().get(key)) return e;
      if (key == "metadata") {
        where.at("metadata", "an object");
        od::object meta;
        if (auto e = field.value().get_object().get(meta)) return e;
        PodObject controller;  // name and namespace only
        if (auto e = decode_metadata(meta, controller, where)) return e;
        ns = std::move(controller.namespace_);
        name = std::move(controller.name);
      } else if (key == "spec") {
        where.at("spec", "an object");
        od::object spec;
        if (auto e = field.value().get_object().get(spec)) return e;
        od::object tmpl;
        const auto e = find_template(spec, kind == "CronJob", tmpl, where);
        if (e == simdjson::NO_SUCH_FIELD) continue;
        if (e) return e;
        found = true;
        if (auto e2 = decode_pod_object(tmpl, pod, where)) return e2;
      }
    }
    return simdjson::SUCCESS;
  });
  const std::string what = std::string(kind) + " " + who(ns.empty() ? pod.namespace_ : ns, name);
  if (err) return util::make_error(what + ": " + where.describe(err));
  if (!found) {
    return util::make_error(
        what + ": " + (kind == "CronJob" ? "spec.jobTemplate.spec.template" : "spec.template") +
        ": the pod template is required");
  }
  pod.namespace_ = std::move(ns);
  pod.name = std::move(name);
  pod.phase.clear();  // a template is not a pod that ran
  pod.deleting = false;
  pod.ips.clear();
  pod.uid.clear();  // the controller's uid, not a pod's
  return finish_pod(std::move(pod), std::string(kind).c_str(), options);
}

util::Result<NamedObject> decode_named(std::string_view json, bool namespaced,
                                       const DecodeOptions& options) {
  auto& p = thread_parser();
  NamedObject n;
  auto run = [&]() -> simdjson::error_code {
    od::document doc;
    if (auto err = p.parser.iterate(util::pad(p.padded, json)).get(doc)) return err;
    od::object meta;
    if (auto err = doc["metadata"].get_object().get(meta)) return err;
    for (auto field : meta) {
      std::string_view key;
      if (auto err = field.unescaped_key().get(key)) return err;
      if (key == "name") {
        if (auto err = read_string(field.value(), n.name)) return err;
      } else if (key == "namespace" && namespaced) {
        if (auto err = read_string(field.value(), n.namespace_)) return err;
      }
    }
    return simdjson::SUCCESS;
  };
  const simdjson::error_code err = util::guarded(run);
  if (err) {
    return util::make_error("object " + who(n.namespace_, n.name) +
                            ": cannot decode: " + simdjson::error_message(err));
  }
  if (namespaced && n.namespace_.empty()) n.namespace_ = options.default_namespace;
  if (n.name.empty() || (namespaced && n.namespace_.empty())) {
    return util::make_error("object " + who(n.namespace_, n.name) + ": metadata.name" +
                            (namespaced ? " and metadata.namespace are" : " is") + " required");
  }
  return n;
}

PolicyObject policy_object(const nlohmann::json& object) {
  PolicyObject p;
  p.policy = std::make_shared<const policy::Policy>(policy::parse_policy(object));
  p.fingerprint = policy::policy_fingerprint(object);
  auto field = [](const nlohmann::json& o, const char* key) -> const nlohmann::json& {
    static const nlohmann::json kNull;
    if (!o.is_object()) return kNull;
    auto it = o.find(key);
    return it == o.end() ? kNull : *it;
  };
  const nlohmann::json& meta = field(object, "metadata");
  auto m = std::make_shared<PolicyMeta>();
  if (const auto& v = field(meta, "uid"); v.is_string()) m->uid = v.get<std::string>();
  if (const auto& v = field(meta, "resourceVersion"); v.is_string()) {
    m->resource_version = v.get<std::string>();
  }
  if (const auto& v = field(meta, "generation"); v.is_number_integer()) {
    m->generation = v.get<std::int64_t>();
  }
  if (const auto& c = field(field(object, "status"), "conditions"); !c.is_null()) {
    m->conditions = c.dump();
  }
  p.meta = std::move(m);
  return p;
}

util::Result<PolicyObject> decode_policy(std::string_view json, const DecodeOptions& options) {
  nlohmann::json object = nlohmann::json::parse(json, nullptr, false);
  if (object.is_discarded() || !object.is_object()) {
    return util::make_error("AuthorizationPolicy: the object is not valid JSON");
  }
  auto meta = object.find("metadata");
  if (meta != object.end() && meta->is_object() && !meta->contains("namespace") &&
      !options.default_namespace.empty()) {
    (*meta)["namespace"] = options.default_namespace;
  }
  if (meta == object.end() || !meta->is_object() || !meta->contains("name") ||
      !(*meta)["name"].is_string() || !meta->contains("namespace") ||
      !(*meta)["namespace"].is_string()) {
    return util::make_error(
        "AuthorizationPolicy: metadata.name and metadata.namespace are required strings");
  }
  return policy_object(object);
}

}  // namespace tollgate::index
