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

simdjson::error_code decode_metadata(od::object meta, PodObject& pod) {
  for (auto field : meta) {
    std::string_view key;
    if (auto err = field.unescaped_key().get(key)) return err;
    if (key == "name") {
      if (auto err = read_string(field.value(), pod.name)) return err;
    } else if (key == "namespace") {
      if (auto err = read_string(field.value(), pod.namespace_)) return err;
    } else if (key == "deletionTimestamp") {
      pod.deleting = !field.value().is_null();
    } else if (key == "labels") {
      od::value v = field.value();
      if (v.is_null()) continue;
      od::object labels;
      if (auto err = v.get_object().get(labels)) return err;
      for (auto label : labels) {
        std::string_view k;
        std::string_view val;
        if (auto err = label.unescaped_key().get(k)) return err;
        if (auto err = label.value().get_string().get(val)) return err;
        pod.labels.emplace_back(std::string(k), std::string(val));
      }
    }
  }
  return simdjson::SUCCESS;
}

simdjson::error_code decode_spec(od::object spec, PodObject& pod) {
  for (auto field : spec) {
    std::string_view key;
    if (auto err = field.unescaped_key().get(key)) return err;
    if (key == "serviceAccountName") {
      if (auto err = read_string(field.value(), pod.service_account)) return err;
    } else if (key == "hostNetwork") {
      od::value v = field.value();
      if (!v.is_null()) {
        bool b = false;
        if (auto err = v.get_bool().get(b)) return err;
        pod.host_network = b;
      }
    } else if (key == "containers") {
      od::array containers;
      if (auto err = field.value().get_array().get(containers)) return err;
      for (auto c : containers) {
        od::object container;
        if (auto err = c.get_object().get(container)) return err;
        od::value ports_value;
        auto err = container.find_field_unordered("ports").get(ports_value);
        if (err == simdjson::NO_SUCH_FIELD) continue;
        if (err) return err;
        if (ports_value.is_null()) continue;
        od::array ports;
        if (auto e = ports_value.get_array().get(ports)) return e;
        for (auto p : ports) {
          od::object port;
          if (auto e = p.get_object().get(port)) return e;
          policy::ContainerPort cp;
          for (auto pf : port) {
            std::string_view pk;
            if (auto e = pf.unescaped_key().get(pk)) return e;
            if (pk == "containerPort") {
              std::int64_t n = 0;
              if (auto e = pf.value().get_int64().get(n)) return e;
              cp.number = static_cast<int>(std::clamp<std::int64_t>(n, 0, 65535));
            } else if (pk == "name") {
              if (auto e = read_string(pf.value(), cp.name)) return e;
            }
          }
          pod.ports.push_back(std::move(cp));
        }
      }
    }
  }
  return simdjson::SUCCESS;
}

simdjson::error_code decode_status(od::object status, PodObject& pod) {
  std::string pod_ip;
  for (auto field : status) {
    std::string_view key;
    if (auto err = field.unescaped_key().get(key)) return err;
    if (key == "phase") {
      if (auto err = read_string(field.value(), pod.phase)) return err;
    } else if (key == "podIP") {
      if (auto err = read_string(field.value(), pod_ip)) return err;
    } else if (key == "podIPs") {
      od::value v = field.value();
      if (v.is_null()) continue;
      od::array ips;
      if (auto err = v.get_array().get(ips)) return err;
      for (auto entry : ips) {
        od::object o;
        if (auto err = entry.get_object().get(o)) return err;
        std::string ip;
        if (auto err = read_string(o["ip"], ip)) return err;
        if (!ip.empty()) pod.ips.push_back(std::move(ip));
      }
    }
  }
  if (pod.ips.empty() && !pod_ip.empty()) pod.ips.push_back(std::move(pod_ip));
  return simdjson::SUCCESS;
}

}  // namespace

util::Result<PodObject> decode_pod(std::string_view json) {
  auto& p = thread_parser();
  PodObject pod;
  auto run = [&]() -> simdjson::error_code {
    od::document doc;
    if (auto err = p.parser.iterate(util::pad(p.padded, json)).get(doc)) return err;
    od::object obj;
    if (auto err = doc.get_object().get(obj)) return err;
    for (auto field : obj) {
      std::string_view key;
      if (auto err = field.unescaped_key().get(key)) return err;
      od::value v;
      if (auto err = field.value().get(v)) return err;
      if (key != "metadata" && key != "spec" && key != "status") continue;
      if (v.is_null()) continue;
      od::object sub;
      if (auto err = v.get_object().get(sub)) return err;
      simdjson::error_code err = simdjson::SUCCESS;
      if (key == "metadata") err = decode_metadata(sub, pod);
      if (key == "spec") err = decode_spec(sub, pod);
      if (key == "status") err = decode_status(sub, pod);
      if (err) return err;
    }
    return simdjson::SUCCESS;
  };
  const simdjson::error_code err = util::guarded(run);
  if (err) {
    return util::make_error("Pod " + who(pod.namespace_, pod.name) +
                            ": cannot decode: " + simdjson::error_message(err));
  }
  if (pod.name.empty() || pod.namespace_.empty()) {
    return util::make_error("Pod " + who(pod.namespace_, pod.name) +
                            ": metadata.name and metadata.namespace are required");
  }
  std::sort(pod.labels.begin(), pod.labels.end());
  return pod;
}

util::Result<NamedObject> decode_named(std::string_view json, bool namespaced) {
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
  return p;
}

util::Result<PolicyObject> decode_policy(std::string_view json) {
  nlohmann::json object = nlohmann::json::parse(json, nullptr, false);
  if (object.is_discarded() || !object.is_object()) {
    return util::make_error("AuthorizationPolicy: the object is not valid JSON");
  }
  const auto meta = object.find("metadata");
  if (meta == object.end() || !meta->is_object() || !meta->contains("name") ||
      !(*meta)["name"].is_string() || !meta->contains("namespace") ||
      !(*meta)["namespace"].is_string()) {
    return util::make_error(
        "AuthorizationPolicy: metadata.name and metadata.namespace are required strings");
  }
  return policy_object(object);
}

PodObject pod_object(const policy::Workload& w) {
  PodObject pod;
  pod.namespace_ = w.namespace_;
  pod.name = w.name;
  pod.labels.assign(w.labels.begin(), w.labels.end());
  pod.service_account = w.service_account;
  pod.ports = w.ports;
  pod.phase = "Running";
  return pod;
}

}  // namespace tollgate::index
