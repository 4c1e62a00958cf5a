#!/usr/bin/env python3
"""Checks of what manifests/ and crds/ deploy, for test/manifests_test.sh.

Usage: manifests_check.py ROOT BASE.yaml WITH_NETWORKPOLICY.yaml CRD.yaml
  ROOT: the repository; BASE.yaml: `kubectl kustomize manifests/`; WITH_NETWORKPOLICY.yaml:
  the same with the networkpolicy component; CRD.yaml: crds/'s file as kubectl kustomize
  renders it. Prints every problem; exit status 1 if any.
"""
import os
import re
import sys

import yaml

NAME_LABEL = "app.kubernetes.io/name"
COMMON_LABELS = {NAME_LABEL: "tollgate", "app.kubernetes.io/part-of": "tollgate"}
CRD_FILE = "crds/authorizationpolicies.security.istio.io.yaml"

problems = []


def problem(msg):
    problems.append(msg)


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind, where):
    found = by_kind(docs, kind)
    if len(found) != 1:
        problem(f"{where}: {len(found)} {kind} objects, want exactly 1")
        return None
    return found[0]


def ident(d):
    m = d.get("metadata", {})
    ns = m.get("namespace")
    return f"{d.get('kind')} {ns + '/' if ns else ''}{m.get('name')}"


# --- every file in manifests/ is part of a kustomization -----------------------------------


def check_files_listed(root):
    manifests = os.path.join(root, "manifests")
    listed = set()
    kustomizations = {}
    for dirpath, _, files in os.walk(manifests):
        if "kustomization.yaml" in files:
            path = os.path.join(dirpath, "kustomization.yaml")
            kustomizations[os.path.normpath(dirpath)] = load_all(path)[0]
    referenced_dirs = set()
    for d, k in kustomizations.items():
        for field in ("resources", "components"):
            for entry in k.get(field) or []:
                target = os.path.normpath(os.path.join(d, entry))
                if os.path.isdir(target):
                    referenced_dirs.add(target)
                elif os.path.isfile(target):
                    listed.add(target)
                else:
                    problem(f"{os.path.relpath(d, root)}/kustomization.yaml: {field} entry "
                            f"{entry} names nothing")
        for patch in k.get("patches") or []:
            if isinstance(patch, dict) and "path" in patch:
                listed.add(os.path.normpath(os.path.join(d, patch["path"])))
    for d, k in kustomizations.items():
        rel = os.path.relpath(d, root)
        if d == os.path.normpath(manifests):
            if k.get("kind") != "Kustomization":
                problem(f"{rel}/kustomization.yaml: kind {k.get('kind')}, want Kustomization")
        elif k.get("kind") != "Component" and d not in referenced_dirs:
            problem(f"{rel}/kustomization.yaml: neither a Component nor used by manifests/")
    for dirpath, _, files in os.walk(manifests):
        for name in files:
            path = os.path.normpath(os.path.join(dirpath, name))
            if name == "kustomization.yaml":
                continue
            if name.endswith(".yml"):
                problem(f"{os.path.relpath(path, root)}: name it .yaml")
            if name.endswith((".yaml", ".yml")) and path not in listed:
                problem(f"{os.path.relpath(path, root)}: not listed by any kustomization "
                        "(it would never be applied)")


# --- RBAC: exactly test/fixtures/rbac-uses.txt -----------------------------------------------


def fixture_rows(root):
    rows = set()
    with open(os.path.join(root, "test/fixtures/rbac-uses.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                verb, group, resource, scope = line.split()
                rows.add((verb, "" if group == "core" else group, resource, scope))
    return rows


def expand_rules(role, scope_of):
    """(verb, group, resource, scope) for every grant of a Role or ClusterRole."""
    out = set()
    where = ident(role)
    if role.get("aggregationRule"):
        problem(f"{where}: aggregationRule grants whatever other roles say")
    for i, rule in enumerate(role.get("rules") or []):
        if rule.get("nonResourceURLs"):
            problem(f"{where}: rules[{i}] grants nonResourceURLs")
        groups, resources, verbs = (rule.get(k) or [] for k in ("apiGroups", "resources", "verbs"))
        for v in [*groups, *resources, *verbs, *(rule.get("resourceNames") or [])]:
            if "*" in v:
                problem(f"{where}: rules[{i}] has a wildcard ({v!r})")
        for scope in scope_of(rule):
            for g in groups:
                for r in resources:
                    for v in verbs:
                        out.add((v, g, r, scope))
    return out


def check_rbac(docs, root, sa_ns, sa_name):
    want = fixture_rows(root)
    granted = set()
    subject = {"kind": "ServiceAccount", "name": sa_name, "namespace": sa_ns}
    if not any(d.get("kind") == "ServiceAccount" and d["metadata"].get("name") == sa_name and
               d["metadata"].get("namespace") == sa_ns for d in docs):
        problem(f"the Deployment runs as ServiceAccount {sa_ns}/{sa_name}, which is not deployed")

    def cluster_scope(rule):
        if rule.get("resourceNames"):
            problem(f"ClusterRole rule {rule} is limited to names; the fixture's cluster rows "
                    "are not")
        return ["cluster"]

    def lease_scope(rule):
        names = rule.get("resourceNames") or []
        return [f"lease:{n}" for n in names] if names else ["lease"]

    roles = {("ClusterRole", None, d["metadata"]["name"]): d for d in by_kind(docs, "ClusterRole")}
    roles.update({("Role", d["metadata"].get("namespace"), d["metadata"]["name"]): d
                  for d in by_kind(docs, "Role")})
    bound = set()
    for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        where = ident(b)
        ref = b.get("roleRef", {})
        ns = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        key = (ref.get("kind"), ns if ref.get("kind") == "Role" else None, ref.get("name"))
        if ref.get("apiGroup") != "rbac.authorization.k8s.io" or key not in roles:
            problem(f"{where}: roleRef {ref} names no role deployed here")
            continue
        if b.get("subjects") != [subject]:
            problem(f"{where}: subjects {b.get('subjects')}, want exactly [{subject}]")
        role = roles[key]
        bound.add(key)
        if b["kind"] == "ClusterRoleBinding":
            granted |= expand_rules(role, cluster_scope)
        else:
            if ns != sa_ns:
                problem(f"{where}: in namespace {ns}; the Lease is in the pod's namespace {sa_ns}")
            scope = lease_scope if ref.get("kind") == "Role" else cluster_scope
            granted |= expand_rules(role, scope)
    for key in roles:
        if key not in bound:
            problem(f"{key[0]} {key[2]}: bound to nothing")

    def show(rows):
        return "\n".join(f"    {v} {g or 'core'} {r} {s}" for v, g, r, s in sorted(rows))

    if granted - want:
        problem("granted but not in test/fixtures/rbac-uses.txt:\n" + show(granted - want))
    if want - granted:
        problem("in test/fixtures/rbac-uses.txt but not granted:\n" + show(want - granted))


# --- the Deployment and what selects it ------------------------------------------------------


def selects(selector, labels, where):
    if not isinstance(selector, dict) or not selector:
        problem(f"{where}: empty selector (it selects every pod)")
        return
    if selector.get("matchExpressions"):
        problem(f"{where}: matchExpressions are not checked here; use matchLabels")
    match = selector.get("matchLabels", selector)
    for k, v in match.items():
        if labels.get(k) != v:
            problem(f"{where}: selector {k}={v} does not match the pod template's labels {labels}")


def check_deployment(docs):
    dep = one(docs, "Deployment", "manifests/")
    if dep is None:
        return None
    ns = dep["metadata"].get("namespace")
    spec = dep["spec"]
    tmpl = spec["template"]
    labels = tmpl["metadata"].get("labels", {})
    pod = tmpl["spec"]
    if spec.get("replicas") != 2:
        problem(f"Deployment: replicas {spec.get('replicas')}, want 2")
    selects(spec.get("selector"), labels, "Deployment spec.selector")
    containers = pod.get("containers", [])
    if len(containers) != 1:
        problem(f"Deployment: {len(containers)} containers, want 1")
        return None
    c = containers[0]
    ports = {p.get("name"): p for p in c.get("ports", [])}
    if "http" not in ports:
        problem("Deployment: no container port named http")

    def check_port(port, where):
        if not isinstance(port, str) or port not in ports:
            problem(f"{where}: port {port!r} is not the name of a declared container port "
                    f"({sorted(ports)})")

    probes = {k: c.get(k) for k in ("livenessProbe", "readinessProbe", "startupProbe")}
    for k, probe in probes.items():
        if probe is None:
            if k != "startupProbe":
                problem(f"Deployment: no {k}")
            continue
        get = probe.get("httpGet", {})
        check_port(get.get("port"), f"Deployment {k}")
    paths = {k: (p or {}).get("httpGet", {}).get("path") for k, p in probes.items()}
    if paths["livenessProbe"] != "/healthz":
        problem(f"Deployment: livenessProbe path {paths['livenessProbe']}, want /healthz (the "
                "process alone: not the API server, not leadership)")
    if paths["readinessProbe"] != "/readyz":
        problem(f"Deployment: readinessProbe path {paths['readinessProbe']}, want /readyz")
    if probes["startupProbe"] is not None and paths["startupProbe"] != "/healthz":
        problem("Deployment: startupProbe must use /healthz (a startup probe that waited for "
                "the API server would restart every replica during an outage)")

    env = {e.get("name"): e for e in c.get("env", [])}
    for name, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        got = env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if got != field:
            problem(f"Deployment: env {name} from fieldRef {got}, want {field}")
    args = c.get("args", [])
    if args[:3] != ["run", "--listen", "0.0.0.0:8080"]:
        problem(f"Deployment: args {args} do not start with run --listen 0.0.0.0:8080")
    if "http" in ports and ports["http"].get("containerPort") != 8080:
        problem("Deployment: port http is not 8080, where --listen serves")
    if "--lease-namespace=$(POD_NAMESPACE)" not in args:
        problem("Deployment: args lack --lease-namespace=$(POD_NAMESPACE)")

    psc = pod.get("securityContext", {})
    csc = c.get("securityContext", {})
    want = [(psc.get("runAsNonRoot"), True, "runAsNonRoot"),
            (psc.get("runAsUser"), 65532, "runAsUser"),
            (psc.get("seccompProfile", {}).get("type"), "RuntimeDefault", "seccompProfile"),
            (csc.get("readOnlyRootFilesystem"), True, "readOnlyRootFilesystem"),
            (csc.get("allowPrivilegeEscalation"), False, "allowPrivilegeEscalation"),
            (csc.get("capabilities", {}).get("drop"), ["ALL"], "capabilities.drop")]
    for got, expected, what in want:
        if got != expected:
            problem(f"Deployment: securityContext {what} is {got!r}, want {expected!r}")
    if not c.get("resources", {}).get("requests") or not c["resources"].get("limits"):
        problem("Deployment: resources need requests and limits")

    keys = {}
    for t in pod.get("topologySpreadConstraints", []):
        keys[t.get("topologyKey")] = t
        selects(t.get("labelSelector"), labels, f"topologySpreadConstraints {t.get('topologyKey')}")
    for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone"):
        if key not in keys:
            problem(f"Deployment: no topologySpreadConstraint over {key}")
        elif keys[key].get("whenUnsatisfiable") != "ScheduleAnyway":
            problem(f"Deployment: the spread over {key} must be ScheduleAnyway")

    svc = one(docs, "Service", "manifests/")
    if svc is not None:
        selects(svc["spec"].get("selector"), labels, "Service selector")
        for p in svc["spec"].get("ports", []):
            check_port(p.get("targetPort"), f"Service port {p.get('name')} targetPort")
        if [p.get("name") for p in svc["spec"].get("ports", [])] != ["http"]:
            problem("Service: want exactly one port, named http")
    pdb = one(docs, "PodDisruptionBudget", "manifests/")
    if pdb is not None:
        selects(pdb["spec"].get("selector"), labels, "PodDisruptionBudget selector")
        if pdb["spec"].get("maxUnavailable") != 1 or "minAvailable" in pdb["spec"]:
            problem("PodDisruptionBudget: want maxUnavailable 1 (and no minAvailable)")

    namespaces = [d["metadata"]["name"] for d in by_kind(docs, "Namespace")]
    if ns not in namespaces:
        problem(f"Deployment: namespace {ns} is not created by manifests/ ({namespaces})")
    for d in docs:
        if d["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            continue
        if d["metadata"].get("namespace") != ns:
            problem(f"{ident(d)}: not in the Deployment's namespace {ns}")
    return {"ns": ns, "sa": pod.get("serviceAccountName", "default"), "labels": labels,
            "ports": ports}


def check_common(docs, where):
    for d in docs:
        labels = d.get("metadata", {}).get("labels", {})
        for k, v in COMMON_LABELS.items():
            if labels.get(k) != v:
                problem(f"{where}: {ident(d)} lacks the label {k}: {v}")
        if d.get("kind") == "CustomResourceDefinition":
            problem(f"{where}: {ident(d)}: the CRD stays out of the kustomization (crds/)")


def check_networkpolicy(base, with_np, dep):
    if by_kind(base, "NetworkPolicy"):
        problem("manifests/: a NetworkPolicy without the component")
    rest = [d for d in with_np if d.get("kind") != "NetworkPolicy"]
    if rest != base:
        problem("the networkpolicy component changes more than adding a NetworkPolicy")
    np = one(with_np, "NetworkPolicy", "with components/networkpolicy")
    if np is None or dep is None:
        return
    spec = np["spec"]
    if np["metadata"].get("namespace") != dep["ns"]:
        problem(f"NetworkPolicy: in {np['metadata'].get('namespace')}, not {dep['ns']}")
    selects(spec.get("podSelector"), dep["labels"], "NetworkPolicy podSelector")
    if spec.get("policyTypes") != ["Ingress"]:
        problem(f"NetworkPolicy: policyTypes {spec.get('policyTypes')}, want [Ingress]")
    ingress = spec.get("ingress") or []
    if len(ingress) != 1:
        problem(f"NetworkPolicy: {len(ingress)} ingress rules, want 1 (agents to 8080)")
        return
    rule = ingress[0]
    if rule.get("from") != [{"namespaceSelector": {}}]:
        problem(f"NetworkPolicy: from {rule.get('from')}, want pods of every namespace only")
    http = dep["ports"].get("http", {})
    allowed = [(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports") or []]
    if allowed not in ([("TCP", http.get("containerPort"))], [("TCP", "http")]):
        problem(f"NetworkPolicy: ports {allowed}, want only TCP {http.get('containerPort')}")


# --- the CRD ---------------------------------------------------------------------------------


def structural(node, path):
    """The API server's structural-schema rules that a mistake by hand most often breaks."""
    if not isinstance(node, dict):
        problem(f"{CRD_FILE}: {path} is not a schema")
        return
    if "type" not in node and not (node.get("x-kubernetes-int-or-string") or
                                   node.get("x-kubernetes-preserve-unknown-fields")):
        problem(f"{CRD_FILE}: {path} has no type")
    if "properties" in node and "additionalProperties" in node:
        problem(f"{CRD_FILE}: {path} has both properties and additionalProperties")
    if node.get("type") == "array" and "items" not in node:
        problem(f"{CRD_FILE}: {path} is an array without items")
    for name, sub in (node.get("properties") or {}).items():
        structural(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        structural(node["additionalProperties"], f"{path}[*]")
    if "items" in node:
        structural(node["items"], f"{path}[]")


def dig(node, *path):
    for p in path:
        node = (node or {}).get("properties", {}).get(p) if p != "[]" else (node or {}).get("items")
    return node


def check_crd(root, rendered):
    docs = load_all(os.path.join(root, CRD_FILE))
    if len(docs) != 1:
        problem(f"{CRD_FILE}: {len(docs)} documents, want 1")
        return
    crd = docs[0]
    if rendered != [crd]:
        problem(f"{CRD_FILE}: kubectl kustomize reads it differently than PyYAML")
    with open(os.path.join(root, CRD_FILE), encoding="utf-8") as f:
        header = f.read().split("apiVersion:", 1)[0]
    if "istio/istio" not in header or not re.search(r"\b[0-9a-f]{40}\b", header):
        problem(f"{CRD_FILE}: the header must name the istio/istio commit it is pinned to")
    if crd.get("kind") != "CustomResourceDefinition" or \
            crd.get("apiVersion") != "apiextensions.k8s.io/v1":
        problem(f"{CRD_FILE}: not an apiextensions.k8s.io/v1 CustomResourceDefinition")
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    want_names = {"kind": "AuthorizationPolicy", "listKind": "AuthorizationPolicyList",
                  "plural": "authorizationpolicies", "singular": "authorizationpolicy"}
    for k, v in want_names.items():
        if names.get(k) != v:
            problem(f"{CRD_FILE}: names.{k} {names.get(k)}, want {v}")
    if crd["metadata"].get("name") != "authorizationpolicies.security.istio.io" or \
            spec.get("group") != "security.istio.io" or spec.get("scope") != "Namespaced":
        problem(f"{CRD_FILE}: want the namespaced authorizationpolicies.security.istio.io")
    versions = spec.get("versions", [])
    served = [v["name"] for v in versions if v.get("served")]
    stored = [v["name"] for v in versions if v.get("storage")]
    if served != ["v1", "v1beta1"]:
        problem(f"{CRD_FILE}: serves {served}, want [v1, v1beta1] (as Istio does)")
    if stored != ["v1"]:
        problem(f"{CRD_FILE}: stores {stored}, want [v1]")
    schemas = [v.get("schema") for v in versions]
    if any(s != schemas[0] for s in schemas):
        problem(f"{CRD_FILE}: the versions' schemas differ (Istio serves one schema for all)")
    for v in versions:
        where = f"{CRD_FILE} {v['name']}"
        if v.get("served") and (v.get("subresources") or {}).get("status") != {}:
            problem(f"{where}: no status subresource (tollgate and istiod write status there)")
        cols = {c.get("name"): c for c in v.get("additionalPrinterColumns", [])}
        for name, path, typ in (("Action", ".spec.action", "string"),
                                ("Age", ".metadata.creationTimestamp", "date")):
            c = cols.get(name, {})
            if c.get("jsonPath") != path or c.get("type") != typ:
                problem(f"{where}: printer column {name} must be {typ} at {path}")
        root_schema = (v.get("schema") or {}).get("openAPIV3Schema") or {}
        structural(root_schema, f"{v['name']}")
        s = dig(root_schema, "spec")
        if (s or {}).get("x-kubernetes-preserve-unknown-fields"):
            problem(f"{where}: spec keeps unknown fields; Istio's CRD prunes them")
        if (dig(s, "action") or {}).get("enum") != ["ALLOW", "DENY", "AUDIT", "CUSTOM"]:
            problem(f"{where}: spec.action enum is not [ALLOW, DENY, AUDIT, CUSTOM]")
        checks = {
            "spec.rules[]": dig(s, "rules", "[]"),
            "spec.rules[].from[].source.principals": dig(s, "rules", "[]", "from", "[]", "source",
                                                         "principals"),
            "spec.rules[].from[].source.serviceAccounts": dig(s, "rules", "[]", "from", "[]",
                                                              "source", "serviceAccounts"),
            "spec.rules[].to[].operation.paths": dig(s, "rules", "[]", "to", "[]", "operation",
                                                     "paths"),
            "spec.rules[].when[].key": dig(s, "rules", "[]", "when", "[]", "key"),
            "spec.selector.matchLabels": dig(s, "selector", "matchLabels"),
            "spec.targetRef.kind": dig(s, "targetRef", "kind"),
            "spec.targetRefs[].name": dig(s, "targetRefs", "[]", "name"),
            "spec.provider.name": dig(s, "provider", "name"),
        }
        for path, node in checks.items():
            if not node:
                problem(f"{where}: no {path}")
        if (dig(s, "rules", "[]", "when", "[]") or {}).get("required") != ["key"]:
            problem(f"{where}: spec.rules[].when[].key is not required")
        if not any("targetRef" in r.get("rule", "") and "selector" in r.get("rule", "")
                   for r in (s or {}).get("x-kubernetes-validations", [])):
            problem(f"{where}: no rule that selector, targetRef and targetRefs exclude each other")
        st = dig(root_schema, "status")
        if not (st or {}).get("x-kubernetes-preserve-unknown-fields") or \
                not dig(st, "conditions", "[]", "type"):
            problem(f"{where}: status must keep unknown fields and describe conditions")
        elif (dig(st, "conditions") or {}).get("x-kubernetes-list-type") not in (None, "atomic"):
            problem(f"{where}: status.conditions must stay an atomic list, as in Istio's CRD "
                    "(tollgate writes the whole list)")


def main():
    root, base_path, np_path, crd_rendered = sys.argv[1:5]
    base = load_all(base_path)
    with_np = load_all(np_path)
    check_files_listed(root)
    check_common(base, "manifests/")
    check_common(with_np, "manifests/ with components/networkpolicy")
    dep = check_deployment(base)
    if dep is not None:
        check_rbac(base, root, dep["ns"], dep["sa"])
    check_networkpolicy(base, with_np, dep)
    check_crd(root, load_all(crd_rendered))
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s)")
        return 1
    print(f"manifests_check: {len(base)} objects, RBAC as test/fixtures/rbac-uses.txt, "
          "the CRD as pinned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
