#!/usr/bin/env bash
# The seed scenario end to end on one machine, enforced by real nginx (docs/agent-proxies.md):
#
#   curl (frontend's SPIFFE certificate) --TLS--> nginx --auth_request--> tollgate agent
#                                                  |                         | long-poll
#                                                  v                         v
#                                             the backend app         tollgate run --manifests
#
# Under examples/seed, frontend's GET /api/v1/data is denied (deny-all-backend's `rules: [{}]`
# matches every request, and DENY comes before ALLOW). Once the controller's manifest
# directory holds examples/seed-fixed instead, the same request is allowed, and a caller
# without a certificate is still denied. Exits 0 when all three happen, 1 otherwise.
#
# Needs nginx, openssl, curl, python3 (scripts/install-deps.sh) and a built tollgate:
#   scripts/seed-demo.sh [path/to/tollgate]     (default: $TOLLGATE_BINARY, else build/tollgate)
# Everything listens on 127.0.0.1 (free ports), lives in a temporary directory, and is
# stopped on exit. TOLLGATE_DEMO_KEEP=1 keeps the directory (logs, configs, certificates).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tollgate=${1:-${TOLLGATE_BINARY:-$repo/build/tollgate}}
[[ -x $tollgate ]] || { echo "seed-demo: no tollgate binary at $tollgate (build it first)" >&2; exit 2; }
for tool in nginx openssl curl python3; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] ||
    { echo "seed-demo: $tool is not installed (scripts/install-deps.sh)" >&2; exit 2; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
python=$(command -v /usr/bin/python3 || command -v python3)  # the system's: fast to start

work=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-seed-demo-XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ ${TOLLGATE_DEMO_KEEP:-0} == 1 ]]; then echo "seed-demo: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "seed-demo: $*" >&2; for f in "$work"/*.log; do echo "--- $f"; tail -5 "$f"; done >&2; exit 1; }

# wait_for DESCRIPTION COMMAND...: polls COMMAND until it succeeds, for up to 60 s.
wait_for() {
  local what=$1 deadline=$((SECONDS + 60))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out waiting for $what"
    sleep 0.1
  done
}
port_of() { [[ -s $1 ]] && cat "$1"; }
free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ready() { curl -sf "http://127.0.0.1:$1/readyz"; }
agent_table() { curl -s "http://127.0.0.1:$agent_port/readyz" | sed -n 's/.*"table":"\([0-9a-f]*\)".*/\1/p'; }

say "a test CA and SPIFFE certificates (openssl)"
pki=$work/pki
mkdir -p "$pki"
issue() {  # issue NAME EXTENSIONS
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/$1.key" \
    -out "$pki/$1.csr" -subj "/O=tollgate-demo/CN=$1" 2>/dev/null
  printf '%b' "$2" >"$pki/$1.ext"
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 1 -extfile "$pki/$1.ext" -out "$pki/$1.crt" 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/ca.key" \
  -out "$pki/ca.crt" -days 1 -subj "/CN=tollgate demo mesh CA" 2>/dev/null
issue server 'subjectAltName=DNS:backend.default.svc.cluster.local,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'
issue frontend 'subjectAltName=URI:spiffe://cluster.local/ns/default/sa/frontend\nextendedKeyUsage=clientAuth\n'
openssl x509 -in "$pki/frontend.crt" -noout -ext subjectAltName | sed 's/^/  /'

say "the controller: tollgate run --manifests (a copy of examples/seed)"
mkdir -p "$work/manifests"
cp "$repo"/examples/seed/*.yaml "$work/manifests/"
ls "$work/manifests" | sed 's/^/  /'
"$tollgate" run --manifests "$work/manifests" --listen 127.0.0.1:0 \
  --port-file "$work/controller.port" >"$work/controller.log" 2>&1 &
pids+=($!)
wait_for "the controller's port" port_of "$work/controller.port"
controller_port=$(cat "$work/controller.port")
wait_for "the controller's /readyz" ready "$controller_port"

say "the agent for default/backend"
"$tollgate" agent --controller "http://127.0.0.1:$controller_port" --namespace default \
  --pod backend --state-dir "$work/state" --listen 127.0.0.1:0 \
  --port-file "$work/agent.port" >"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "the agent's port" port_of "$work/agent.port"
agent_port=$(cat "$work/agent.port")
wait_for "the agent's table (/readyz)" ready "$agent_port"
echo "  $(curl -s "http://127.0.0.1:$agent_port/readyz")"

say "the backend application ("$python" -m http.server)"
mkdir -p "$work/www/api/v1"
echo "backend's data" >"$work/www/api/v1/data"
app_port=$(free_port)
"$python" -m http.server "$app_port" --bind 127.0.0.1 --directory "$work/www" \
  >"$work/app.log" 2>&1 &
pids+=($!)
wait_for "the application" curl -sf "http://127.0.0.1:$app_port/api/v1/data"

say "nginx in front of it: examples/agent/nginx.conf (TLS, ssl_verify_client, auth_request)"
nginx_port=$(free_port)
ready_port=$(free_port)
mkdir -p "$work/nginx"
sed -e "s#listen 8443 ssl;#listen 127.0.0.1:$nginx_port ssl;#" \
  -e "s#listen 15021;#listen 127.0.0.1:$ready_port;#" \
  -e "s#server 127.0.0.1:15010;#server 127.0.0.1:$agent_port;#" \
  -e "s#server 127.0.0.1:8080;#server 127.0.0.1:$app_port;#" \
  -e "s#/etc/tollgate/tls/#$pki/#g" \
  -e "s#pid /tmp/nginx.pid;#pid $work/nginx.pid;#" \
  -e "s#access_log /dev/stdout;#access_log $work/nginx-access.log;#" \
  "$repo/examples/agent/nginx.conf" >"$work/nginx.conf"
if sed 's/#.*//' "$work/nginx.conf" | grep -qE '15010|15021|8443|:8080|/etc/tollgate|/tmp/nginx'; then
  die "examples/agent/nginx.conf changed: update this script's substitutions"
fi
"$nginx_bin" -c "$work/nginx.conf" -p "$work/nginx" -e stderr -g 'daemon off;' >"$work/nginx.log" 2>&1 &
pids+=($!)
wait_for "nginx, and the agent's readiness through it" curl -sf "http://127.0.0.1:$ready_port/ready"

# request_as WHO: frontend's GET /api/v1/data through nginx, with frontend's certificate or
# none; prints the command and the answer, and leaves its HTTP status in $status.
request_as() {
  local cert=() shown=""
  if [[ $1 == frontend ]]; then
    cert=(--cert "$pki/frontend.crt" --key "$pki/frontend.key")
    shown="--cert frontend.crt --key frontend.key "
  fi
  echo "  \$ curl --cacert ca.crt ${shown}https://127.0.0.1:$nginx_port/api/v1/data"
  status=$(curl -s -o "$work/body" -D "$work/headers" --cacert "$pki/ca.crt" "${cert[@]}" \
    -H "Host: backend.default.svc.cluster.local" "https://127.0.0.1:$nginx_port/api/v1/data" \
    -w '%{http_code}') || true
  grep -i '^HTTP/\|^x-tollgate' "$work/headers" | tr -d '\r' | sed 's/^/    /'
  if [[ $status == 200 ]]; then sed 's/^/    /' "$work/body"; fi
}

say "under examples/seed: frontend's GET is denied"
request_as frontend
[[ $status == 403 ]] || die "expected 403 under examples/seed, got $status"
grep '"request denied"' "$work/agent.log" | tail -1 | sed 's/^/  agent: /'

say "the manifest directory now holds examples/seed-fixed (no deny-all-backend)"
before=$(agent_table)
rm -f "$work"/manifests/*.yaml
cp "$repo"/examples/seed-fixed/*.yaml "$work/manifests/"
ls "$work/manifests" | sed 's/^/  /'
changed() { local t; t=$(agent_table); [[ -n $t && $t != "$before" ]]; }
wait_for "the agent to receive the new table" changed
echo "  the agent enforces table $(agent_table) (was $before)"

say "under examples/seed-fixed: frontend's GET is allowed"
request_as frontend
[[ $status == 200 ]] || die "expected 200 under examples/seed-fixed, got $status"

say "...and a caller without a certificate is still denied"
request_as nobody
[[ $status == 403 ]] || die "expected 403 without a certificate, got $status"

say "seed-demo: the seed scenario reproduced (403, then 200 once fixed)"
