// bench/ingest: the generated cluster. Realistic pods (managedFields, ownerReferences,
// status; 2.7 KB of JSON each as the API server serves them) in regular namespaces of 10 apps
// with 10 policies each, plus namespace "big": one app of 1,000 pods for the selection
// latency. Pods are kept as JSON text, never as trees (100k trees would take gigabytes).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tollgate::bench {

using nlohmann::json;

struct ClusterSpec {
  int regular_namespaces = 200;  // 200: 21,000 pods and 2,000 policies; 999: 100,900 and 9,990
  int apps = 10;
  int pods_per_app = 10;
  int big_pods = 1000;
  int policies_per_namespace = 10;
  int pods() const { return regular_namespaces * apps * pods_per_app + big_pods; }
  int policies() const { return regular_namespaces * policies_per_namespace; }
};

inline std::string ns_name(int n) {
  char ns[16];
  std::snprintf(ns, sizeof ns, "ns-%03d", n);
  return ns;
}

inline std::string pod_name(const std::string& app, int i) {
  return app + "-7d9f8c6b5-" + std::to_string(10000 + i);
}

inline json managed_fields() {
  json managed = json::array();
  for (const auto* manager : {"kube-controller-manager", "kubelet"}) {
    managed.push_back({{"manager", manager},
                       {"operation", "Update"},
                       {"apiVersion", "v1"},
                       {"time", "2026-11-30T10:00:00Z"},
                       {"fieldsType", "FieldsV1"},
                       {"fieldsV1",
                        {{"f:metadata",
                          {{"f:generateName", json::object()},
                           {"f:labels",
                            {{".", json::object()},
                             {"f:app", json::object()},
                             {"f:pod-template-hash", json::object()}}},
                           {"f:ownerReferences", {{".", json::object()}}}}},
                         {"f:spec",
                          {{"f:containers", {{"k:{\"name\":\"app\"}", json::object()}}},
                           {"f:serviceAccountName", json::object()}}},
                         {"f:status",
                          {{"f:conditions", json::object()},
                           {"f:podIP", json::object()},
                           {"f:podIPs", json::object()}}}}}});
  }
  return managed;
}

inline json pod_metadata(const std::string& ns, const std::string& app, int i, bool managed) {
  json meta = {{"name", pod_name(app, i)},
               {"generateName", app + "-7d9f8c6b5-"},
               {"namespace", ns},
               {"uid", "3f2b6c1e-0000-4000-8000-" + std::to_string(100000000000LL + i)},
               {"resourceVersion", std::to_string(1000 + i)},
               {"creationTimestamp", "2026-11-30T10:00:00Z"},
               {"labels", {{"app", app}, {"pod-template-hash", "7d9f8c6b5"}, {"version", "v1"}}},
               {"annotations",
                {{"kubectl.kubernetes.io/restartedAt", "2026-11-30T09:59:00Z"},
                 {"prometheus.io/scrape", "true"}}},
               {"ownerReferences", json::array({{{"apiVersion", "apps/v1"},
                                                 {"kind", "ReplicaSet"},
                                                 {"name", app + "-7d9f8c6b5"},
                                                 {"uid", "5a1c0000-0000-4000-8000-000000000001"},
                                                 {"controller", true},
                                                 {"blockOwnerDeletion", true}}})}};
  if (managed) meta["managedFields"] = managed_fields();
  return meta;
}

// A pod as the API server serves it (`managed`: with managedFields; kubectl's export leaves
// them out).
inline json pod_json(const std::string& ns, const std::string& app, int i, bool managed = true) {
  const std::string ip = "10." + std::to_string(i / 65536 % 256) + "." +
                         std::to_string(i / 256 % 256) + "." + std::to_string(i % 256);
  const json container = {
      {"name", "app"},
      {"image", "registry.example/" + app + ":1.4.2"},
      {"ports", json::array({{{"name", "http"}, {"containerPort", 8080}, {"protocol", "TCP"}}})},
      {"resources",
       {{"requests", {{"cpu", "100m"}, {"memory", "128Mi"}}}, {"limits", {{"memory", "256Mi"}}}}},
      {"volumeMounts",
       json::array(
           {{{"name", "kube-api-access"}, {"readOnly", true}, {"mountPath", "/var/run/secrets"}}})},
      {"terminationMessagePath", "/dev/termination-log"},
      {"imagePullPolicy", "IfNotPresent"}};
  const json status_container = {
      {"name", "app"},
      {"ready", true},
      {"restartCount", 0},
      {"image", "registry.example/" + app + ":1.4.2"},
      {"imageID", "registry.example/" + app + "@sha256:0123456789abcdef"},
      {"containerID", "containerd://" + std::to_string(i)},
      {"started", true},
      {"state", {{"running", {{"startedAt", "2026-11-30T10:00:03Z"}}}}}};
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", pod_metadata(ns, app, i, managed)},
          {"spec",
           {{"volumes",
             json::array({{{"name", "kube-api-access"}, {"projected", {{"defaultMode", 420}}}}})},
            {"containers", json::array({container})},
            {"restartPolicy", "Always"},
            {"terminationGracePeriodSeconds", 30},
            {"dnsPolicy", "ClusterFirst"},
            {"serviceAccountName", app},
            {"serviceAccount", app},
            {"nodeName", "node-" + std::to_string(i % 50)},
            {"schedulerName", "default-scheduler"},
            {"priority", 0}}},
          {"status",
           {{"phase", "Running"},
            {"conditions", json::array({{{"type", "Ready"},
                                         {"status", "True"},
                                         {"lastTransitionTime", "2026-11-30T10:00:05Z"}},
                                        {{"type", "ContainersReady"},
                                         {"status", "True"},
                                         {"lastTransitionTime", "2026-11-30T10:00:05Z"}}})},
            {"hostIP", "192.168.0." + std::to_string(i % 50)},
            {"podIP", ip},
            {"podIPs", json::array({{{"ip", ip}}})},
            {"startTime", "2026-11-30T10:00:01Z"},
            {"qosClass", "Burstable"},
            {"containerStatuses", json::array({status_container})}}}};
}

inline json policy_json(const std::string& ns, const std::string& name, const std::string& app,
                        int port, const std::string& action = "ALLOW") {
  return {{"apiVersion", "security.istio.io/v1"},
          {"kind", "AuthorizationPolicy"},
          {"metadata", {{"name", name}, {"namespace", ns}, {"resourceVersion", "1"}}},
          {"spec",
           {{"selector", {{"matchLabels", {{"app", app}}}}},
            {"action", action},
            {"rules",
             json::array(
                 {{{"from", json::array({{{"source",
                                           {{"principals", json::array({"cluster.local/ns/" + ns +
                                                                        "/sa/frontend"})}}}}})},
                   {"to", json::array({{{"operation",
                                         {{"methods", {"GET", "POST"}},
                                          {"ports", {std::to_string(port)}}}}}})}}})}}}};
}

// Calls f(namespace, app, index) for every pod of the cluster, in order.
template <typename F>
void for_each_pod(const ClusterSpec& spec, F f) {
  int i = 0;
  for (int n = 0; n < spec.regular_namespaces; ++n) {
    const std::string ns = ns_name(n);
    for (int a = 0; a < spec.apps; ++a) {
      const std::string app = "app-" + std::to_string(a);
      for (int p = 0; p < spec.pods_per_app; ++p) f(ns, app, i++);
    }
  }
  for (int p = 0; p < spec.big_pods; ++p) f(std::string("big"), std::string("big"), i++);
}

// Calls f(policy) for every policy of the cluster.
template <typename F>
void for_each_policy(const ClusterSpec& spec, F f) {
  for (int n = 0; n < spec.regular_namespaces; ++n) {
    for (int k = 0; k < spec.policies_per_namespace; ++k) {
      f(policy_json(ns_name(n), "allow-" + std::to_string(k),
                    "app-" + std::to_string(k % spec.apps), 8080));
    }
  }
}

inline std::vector<std::string> namespaces(const ClusterSpec& spec) {
  std::vector<std::string> out;
  for (int n = 0; n < spec.regular_namespaces; ++n) out.push_back(ns_name(n));
  out.emplace_back("big");
  return out;
}

}  // namespace tollgate::bench
