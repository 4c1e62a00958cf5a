#!/usr/bin/env bash
# What the repository deploys (manifests/, crds/), checked without a cluster:
#  - `kubectl kustomize manifests/` renders, alone and with components/networkpolicy (through
#    an overlay in a temporary directory);
#  - test/manifests_check.py on the renders: every file under manifests/ is listed by a
#    kustomization, RBAC grants exactly test/fixtures/rbac-uses.txt to the Deployment's
#    ServiceAccount, selectors, ports, probes, env, replicas, the PDB, the NetworkPolicy; and
#    crds/ keeps Istio's versions, printer columns, status subresource and schema.
# Usage: test/manifests_test.sh [REPOSITORY_ROOT]. Exit status 77 (CTest: skipped) when
# kubectl is not installed; 1 on any problem. TOLLGATE_PYTHON: the python3 to use.
set -euo pipefail
root=$(realpath "${1:-$(dirname "$0")/..}")
command -v kubectl >/dev/null || { echo "manifests_test: kubectl not found: skipped"; exit 77; }
python=${TOLLGATE_PYTHON:-python3}  # CTest passes Debian's (python3-yaml)
"$python" -c 'import yaml' || { echo "manifests_test: $python has no PyYAML (python3-yaml)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# kubectl kustomize talks to no server; an empty kubeconfig makes sure of it.
export KUBECONFIG=$tmp/kubeconfig
: >"$KUBECONFIG"

kubectl kustomize "$root/manifests" >"$tmp/base.yaml"

# The overlay a user writes to add the NetworkPolicy (docs/operations.md). kustomize takes
# other kustomizations by relative path only.
mkdir "$tmp/overlay"
rel=$(realpath --relative-to="$tmp/overlay" "$root/manifests")
cat >"$tmp/overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel
components:
  - $rel/components/networkpolicy
YAML
kubectl kustomize "$tmp/overlay" >"$tmp/with-networkpolicy.yaml"

# The CRD as kubectl reads it: `kubectl apply --dry-run=client` needs a server to map the kind,
# kubectl kustomize does not. A YAML error fails here; the check compares what it read with
# PyYAML's reading.
mkdir "$tmp/crd"
cp "$root"/crds/*.yaml "$tmp/crd/"
{
  echo "resources:"
  for f in "$root"/crds/*.yaml; do echo "  - $(basename "$f")"; done
} >"$tmp/crd/kustomization.yaml"
kubectl kustomize "$tmp/crd" >"$tmp/crd.yaml"

"$python" "$root/test/manifests_check.py" "$root" "$tmp/base.yaml" "$tmp/with-networkpolicy.yaml" \
  "$tmp/crd.yaml"
