// The fake API server's discovery documents (/version, /api, /api/v1, /apis, /apis/<group>,
// /apis/<group>/<version>) in the legacy (unaggregated) format, built from the registered
// collections: enough for kubectl's RESTMapper (kinds, short names, scopes, subresources).
#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <tuple>

#include "test/support/fake_apiserver_internal.h"
#include "tollgate/util/strings.h"

namespace tollgate::testing::fake {
namespace {

const std::set<std::string>& cluster_scoped() {
  static const std::set<std::string> kNames = {
      "namespaces",          "nodes",
      "persistentvolumes",   "clusterroles",
      "clusterrolebindings", "customresourcedefinitions",
      "storageclasses",      "priorityclasses",
      "apiservices",         "validatingwebhookconfigurations",
      "ingressclasses",      "mutatingwebhookconfigurations",
      "runtimeclasses",      "certificatesigningrequests",
      "csidrivers",          "csinodes",
      "volumeattachments",   "componentstatuses",
  };
  return kNames;
}

std::vector<std::string> short_names(const std::string& resource) {
  static const std::map<std::string, std::vector<std::string>> kNames = {
      {"authorizationpolicies", {"ap"}},
      {"configmaps", {"cm"}},
      {"customresourcedefinitions", {"crd", "crds"}},
      {"daemonsets", {"ds"}},
      {"deployments", {"deploy"}},
      {"endpoints", {"ep"}},
      {"events", {"ev"}},
      {"namespaces", {"ns"}},
      {"nodes", {"no"}},
      {"peerauthentications", {"pa"}},
      {"persistentvolumeclaims", {"pvc"}},
      {"persistentvolumes", {"pv"}},
      {"pods", {"po"}},
      {"replicasets", {"rs"}},
      {"requestauthentications", {"ra"}},
      {"serviceaccounts", {"sa"}},
      {"services", {"svc"}},
      {"statefulsets", {"sts"}},
  };
  auto it = kNames.find(resource);
  return it == kNames.end() ? std::vector<std::string>{} : it->second;
}

// Kubernetes version priority: GA before beta before alpha, higher numbers first, then others
// alphabetically.
std::tuple<int, int, int, std::string> version_rank(const std::string& v) {
  static const std::regex kVersion(R"(^v(\d+)(?:(alpha|beta)(\d+))?$)");
  std::smatch m;
  if (!std::regex_match(v, m, kVersion)) return {3, 0, 0, v};
  const int stability = !m[2].matched ? 0 : m[2].str() == "beta" ? 1 : 2;
  const int minor = m[3].matched ? std::stoi(m[3].str()) : 0;
  return {stability, -std::stoi(m[1].str()), -minor, v};
}

json resource_list(const std::map<std::string, Collection>& collections, const std::string& group,
                   const std::string& version) {
  json resources = json::array();
  for (const auto& [path, c] : collections) {
    if (c.resource.empty() || c.group != group || c.version != version) continue;
    json entry = {{"name", c.resource},
                  {"singularName", util::lowered(c.kind)},
                  {"namespaced", c.namespaced},
                  {"kind", c.kind},
                  {"verbs", {"create", "delete", "get", "list", "patch", "update", "watch"}}};
    if (auto names = short_names(c.resource); !names.empty()) entry["shortNames"] = names;
    resources.push_back(entry);
    if (c.status_subresource) {
      resources.push_back({{"name", c.resource + "/status"},
                           {"singularName", ""},
                           {"namespaced", c.namespaced},
                           {"kind", c.kind},
                           {"verbs", {"get", "patch", "update"}}});
    }
  }
  if (resources.empty()) return nullptr;
  return {{"kind", "APIResourceList"},
          {"apiVersion", "v1"},
          {"groupVersion", group.empty() ? version : group + "/" + version},
          {"resources", resources}};
}

// The API groups and their versions, preferred first.
std::map<std::string, std::vector<std::string>> groups(
    const std::map<std::string, Collection>& collections) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [path, c] : collections) {
    if (c.group.empty() || c.resource.empty()) continue;
    auto& versions = out[c.group];
    if (std::find(versions.begin(), versions.end(), c.version) == versions.end()) {
      versions.push_back(c.version);
    }
  }
  for (auto& [group, versions] : out) {
    std::sort(versions.begin(), versions.end(), [](const std::string& a, const std::string& b) {
      return version_rank(a) < version_rank(b);
    });
  }
  return out;
}

json api_group(const std::string& name, const std::vector<std::string>& versions) {
  json list = json::array();
  for (const std::string& v : versions) {
    list.push_back({{"groupVersion", name + "/" + v}, {"version", v}});
  }
  return {{"name", name}, {"versions", list}, {"preferredVersion", list[0]}};
}

// The OpenAPI v3 document of a group version: for each resource only the PATCH of an object,
// with its group-version-kind, the fieldValidation parameter and the patch types it accepts.
// That is what kubectl reads from it: whether the server validates fields itself (so that
// `kubectl apply` needs no client-side schema, which would need /openapi/v2), and whether a
// kind takes strategic merge patches (it says no: kubectl computes a JSON merge patch for a
// custom resource, and a strategic one from its own types for a built-in one).
json openapi_v3(const std::map<std::string, Collection>& collections, const std::string& group,
                const std::string& version) {
  json paths = json::object();
  for (const auto& [path, c] : collections) {
    if (c.resource.empty() || c.group != group || c.version != version) continue;
    const std::string prefix = group.empty() ? "/api/v1" : "/apis/" + group + "/" + version;
    const std::string object_path =
        prefix + (c.namespaced ? "/namespaces/{namespace}/" : "/") + c.resource + "/{name}";
    json content = json::object();
    for (const char* type : {"application/json-patch+json", "application/merge-patch+json"}) {
      content[type] = {{"schema", {{"type", "object"}}}};
    }
    paths[object_path] = {
        {"patch",
         {{"x-kubernetes-group-version-kind",
           {{"group", group}, {"version", version}, {"kind", c.kind}}},
          {"parameters",
           {{{"name", "fieldValidation"}, {"in", "query"}, {"schema", {{"type", "string"}}}},
            {{"name", "fieldManager"}, {"in", "query"}, {"schema", {{"type", "string"}}}},
            {{"name", "dryRun"}, {"in", "query"}, {"schema", {{"type", "string"}}}}}},
          {"requestBody", {{"content", content}}},
          {"responses", {{"200", {{"description", "OK"}}}}}}}};
  }
  if (paths.empty()) return nullptr;
  return {{"openapi", "3.0.0"},
          {"info", {{"title", "Kubernetes"}, {"version", "v1.32.0"}}},
          {"paths", paths},
          {"components", {{"schemas", json::object()}}}};
}

json openapi_v3_root(const std::map<std::string, Collection>& collections) {
  json paths = json::object();
  for (const auto& [path, c] : collections) {
    if (c.resource.empty()) continue;
    const std::string gv = c.group.empty() ? "api/v1" : "apis/" + c.group + "/" + c.version;
    paths[gv] = {{"serverRelativeURL", "/openapi/v3/" + gv}};
  }
  return {{"paths", paths}};
}

}  // namespace

void describe_path(Collection& c) {
  static const std::regex kCore(R"(^/api/(v1)/([^/]+)$)");
  static const std::regex kGroup(R"(^/apis/([^/]+)/([^/]+)/([^/]+)$)");
  std::smatch m;
  if (std::regex_match(c.path, m, kCore)) {
    c.group.clear();
    c.version = m[1].str();
    c.resource = m[2].str();
  } else if (std::regex_match(c.path, m, kGroup)) {
    c.group = m[1].str();
    c.version = m[2].str();
    c.resource = m[3].str();
  } else {
    // An unusual path: served, but not in discovery.
    c.resource = c.path.substr(c.path.rfind('/') + 1);
  }
  c.namespaced = cluster_scoped().count(c.resource) == 0;
}

bool is_discovery_path(const std::string& path) {
  static const std::regex kGroupPaths(R"(^/apis/[^/]+(/[^/]+)?/?$)");
  return path == "/version" || path == "/version/" || path == "/api" || path == "/api/" ||
         path == "/api/v1" || path == "/api/v1/" || path == "/apis" || path == "/apis/" ||
         path.rfind("/openapi/", 0) == 0 || std::regex_match(path, kGroupPaths);
}

std::optional<json> discovery(const std::map<std::string, Collection>& collections,
                              const std::string& raw_path, std::uint16_t port) {
  std::string path = raw_path;
  if (path.size() > 1 && path.back() == '/') path.pop_back();
  if (path == "/version") {
    return json{{"major", "1"},
                {"minor", "32"},
                {"gitVersion", "v1.32.0"},
                {"gitCommit", "0000000000000000000000000000000000000000"},
                {"gitTreeState", "clean"},
                {"buildDate", "2024-12-11T00:00:00Z"},
                {"goVersion", "go1.23.3"},
                {"compiler", "gc"},
                {"platform", "linux/amd64"}};
  }
  if (path == "/api") {
    return json{
        {"kind", "APIVersions"},
        {"versions", {"v1"}},
        {"serverAddressByClientCIDRs",
         {{{"clientCIDR", "0.0.0.0/0"}, {"serverAddress", "127.0.0.1:" + std::to_string(port)}}}}};
  }
  if (path == "/api/v1") {
    json list = resource_list(collections, "", "v1");
    if (list.is_null()) {
      list = {{"kind", "APIResourceList"}, {"groupVersion", "v1"}, {"resources", json::array()}};
    }
    return list;
  }
  if (path == "/openapi/v3") return openapi_v3_root(collections);
  if (path == "/openapi/v3/api/v1") {
    json doc = openapi_v3(collections, "", "v1");
    if (doc.is_null()) return std::nullopt;
    return doc;
  }
  static const std::regex kOpenApiGroup(R"(^/openapi/v3/apis/([^/]+)/([^/]+)$)");
  std::smatch om;
  if (std::regex_match(path, om, kOpenApiGroup)) {
    json doc = openapi_v3(collections, om[1].str(), om[2].str());
    if (doc.is_null()) return std::nullopt;
    return doc;
  }
  const auto all = groups(collections);
  if (path == "/apis") {
    json list = json::array();
    for (const auto& [name, versions] : all) list.push_back(api_group(name, versions));
    return json{{"kind", "APIGroupList"}, {"apiVersion", "v1"}, {"groups", list}};
  }
  static const std::regex kGroup(R"(^/apis/([^/]+)(?:/([^/]+))?$)");
  std::smatch m;
  if (!std::regex_match(path, m, kGroup)) return std::nullopt;
  auto it = all.find(m[1].str());
  if (it == all.end()) return std::nullopt;
  if (!m[2].matched) {
    json group = api_group(it->first, it->second);
    group["kind"] = "APIGroup";
    group["apiVersion"] = "v1";
    return group;
  }
  json list = resource_list(collections, m[1].str(), m[2].str());
  if (list.is_null()) return std::nullopt;
  return list;
}

}  // namespace tollgate::testing::fake
