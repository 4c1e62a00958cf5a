#!/usr/bin/env bash
# The one list of what tollgate needs on Debian bookworm: used by README, .ci/run and the
# Dockerfile, so they cannot drift. TOLLGATE_SKIP_APT=1 skips it (packages already there).
# `--runtime`: only what the built binary loads (the Dockerfile's runtime stage; checked
# against the binary by test/dockerfile_runtime_test.sh).
set -euo pipefail

packages=(
  build-essential g++ cmake ninja-build pkg-config git ca-certificates
  clang libclang-rt-14-dev clang-format clang-tidy
  libboost-dev libboost-system-dev libssl-dev
  nlohmann-json3-dev libsimdjson-dev libyaml-dev libcli11-dev
  catch2 librapidcheck-dev prometheus-cpp-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc  # the agent's gRPC
  python3-grpcio python3-grpc-tools python3-h2  # test/grpc: the independent ext_authz client
  wrk nginx-light caddy curl openssl  # bench/serve; the agent behind real proxies (test/proxy)
  python3-yaml  # test/manifests_check.py
)
# test/manifests_test.sh renders manifests/ with `kubectl kustomize`. Debian bookworm's archive
# has no kubectl (its kubernetes-client is kubectl 1.20, whose kustomize predates components),
# so kubectl is installed when a configured repository offers it or it is already installed,
# as on this project's machines and CI; elsewhere that test is skipped (exit 77).
optional=(kubectl)

runtime=(
  libyaml-0-2 libsimdjson14 libssl3 libprometheus-cpp-core1.0 libgrpc++1.51 libprotobuf32
  ca-certificates
)
if [[ "${1:-}" == --runtime ]]; then
  packages=("${runtime[@]}")
  optional=()
fi

if [[ "${TOLLGATE_SKIP_APT:-0}" == 1 ]]; then
  exit 0
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
for p in "${optional[@]}"; do
  if apt-cache policy "$p" 2>/dev/null | grep -q '^  Candidate: [^(]'; then
    packages+=("$p")
  else
    echo "install-deps: $p is not available from the configured repositories: skipped" >&2
  fi
done
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
if [[ "${1:-}" == --runtime ]]; then
  "${sudo[@]}" rm -rf /var/lib/apt/lists/*
fi
echo "install-deps: ${#packages[@]} packages present"
