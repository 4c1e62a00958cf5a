#!/usr/bin/env python3
"""The agent behind a real proxy, over loopback: `proxy_test.py nginx` or `proxy_test.py caddy`.

The proxy runs the shipped config (examples/agent/nginx.conf or Caddyfile, with ports and
certificate paths substituted) in front of test/proxy/app.py, asking `tollgate agent`, which
syncs with `tollgate run --manifests`. In order:

  identity    a real client certificate's SPIFFE id is the principal; a rogue CA's is refused
  forgery     client-sent identity, method, path, address and port headers are replaced
  change      a policy written into the controller's directory reaches the agent's decisions
  compare     a few hundred generated requests: the proxy's answer == POST /v1/check's decision
  controller  the controller down: the agent keeps deciding, as before
  restart     the agent restarted while the controller is down: the saved table decides
  agent-down  the agent down: the proxy answers 5xx, never 2xx
  no-table    an agent without a table (controller unreachable, or the pod unknown): 403 no-table

Needs nginx or caddy, and openssl; fails (never skips) without them. Run by CTest with
TOLLGATE_BINARY and TOLLGATE_SOURCE_DIR set. TOLLGATE_PROXY_SEED=N repeats a run's requests.
"""
import base64
import json
import os
import random
import signal
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import fail, wait_for  # noqa: E402

FRONTEND = "cluster.local/ns/default/sa/frontend"
REQUESTS = 300


def policies(proxy_port):
    deny = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "deny-sensitive", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "backend"}}, "action": "DENY", "rules": [
                {"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]},
                {"when": [{"key": "request.headers[x-token]", "values": ["stolen"]}]},
                {"from": [{"source": {"notPrincipals": ["*"]}}],
                 "to": [{"operation": {"methods": ["DELETE"]}}]}]}}
    allow = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": "allow-backend", "namespace": "default"},
             "spec": {"selector": {"matchLabels": {"app": "backend"}}, "rules": [
                 {"from": [{"source": {"principals": [FRONTEND]}}],
                  "to": [{"operation": {"methods": ["GET", "HEAD"], "paths": ["/api/*"]}}]},
                 {"from": [{"source": {"namespaces": ["prod"]}}],
                  "to": [{"operation": {"ports": [str(proxy_port)]}}]},
                 {"to": [{"operation": {"hosts": ["public.example", "public.example:*"],
                                        "paths": ["/public/*"]}}]},
                 {"from": [{"source": {"ipBlocks": ["127.0.0.0/8"]}}],
                  "to": [{"operation": {"methods": ["OPTIONS"]}}]},
                 {"to": [{"operation": {"paths": ["/keyed/*"]}}],
                  "when": [{"key": "request.headers[x-api-key]", "values": ["k-*"]}]},
                 {"from": [{"source": {"principals": [FRONTEND]}}],
                  "to": [{"operation": {"hosts": ["api.example:8443"],
                                        "methods": ["POST", "PUT"]}}]},
                 # Rules only a forged header could satisfy: the address, the port.
                 {"from": [{"source": {"remoteIpBlocks": ["10.0.0.0/8"]}}]},
                 {"to": [{"operation": {"ports": ["1"]}}]}]}}
    return [deny, allow]


def cluster(proxy_port):
    return [harness.workload("backend", {"app": "backend"}, "backend"),
            harness.workload("frontend", {"app": "frontend"}, "frontend"),
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "backend", "namespace": "default"}},
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "frontend", "namespace": "default"}}] + policies(proxy_port)


# --- the proxies, from the shipped configs ---

def start_nginx(env):
    nginx = harness.require("nginx")
    tls = "/etc/tollgate/tls/"
    path = harness.shipped_config("nginx.conf", [
        ("listen 8443 ssl;", "listen 127.0.0.1:%d ssl;" % env.port),
        ("listen 15021;", "listen 127.0.0.1:%d;" % env.health_port),
        ("server 127.0.0.1:15010;", "server 127.0.0.1:%d;" % env.agent_port),
        ("server 127.0.0.1:8080;", "server 127.0.0.1:%d;" % env.app.port),
        (tls, env.pki.dir + "/"),
        ("pid /tmp/nginx.pid;", "pid %s;" % os.path.join(env.work, "nginx.pid")),
        ("access_log /dev/stdout;", "access_log %s;" % os.path.join(env.work, "nginx-access.log")),
    ], os.path.join(env.work, "nginx.conf"))
    prefix = os.path.join(env.work, "nginx")
    os.makedirs(prefix, exist_ok=True)
    env.reserved.release()
    env.health_reserved.release()
    # -e: nginx's own log before it reads the config (a non-root run cannot open the default).
    return harness.Process("nginx", [nginx, "-c", path, "-p", prefix, "-e", "stderr",
                                     "-g", "daemon off;"], os.path.join(env.work, "nginx.log"))


def start_caddy(env):
    caddy = harness.require("caddy")
    path = harness.shipped_config("Caddyfile", [
        # Loopback only, as every server in the tests.
        ("\n:8443 {\n", "\n:%d {\n\tbind 127.0.0.1\n" % env.port),
        ("header_up X-Forwarded-Port 8443", "header_up X-Forwarded-Port %d" % env.port),
        ("forward_auth 127.0.0.1:15010 {", "forward_auth 127.0.0.1:%d {" % env.agent_port),
        ("reverse_proxy 127.0.0.1:8080", "reverse_proxy 127.0.0.1:%d" % env.app.port),
        ("\nhttp://:15021 {\n", "\nhttp://:%d {\n\tbind 127.0.0.1\n" % env.health_port),
        ("reverse_proxy 127.0.0.1:15010", "reverse_proxy 127.0.0.1:%d" % env.agent_port),
        ("/etc/tollgate/tls/", env.pki.dir + "/"),
    ], os.path.join(env.work, "Caddyfile"))
    home = os.path.join(env.work, "caddy-home")
    os.makedirs(home, exist_ok=True)
    caddy_env = dict(os.environ, HOME=home, XDG_DATA_HOME=home, XDG_CONFIG_HOME=home)
    env.reserved.release()
    env.health_reserved.release()
    return harness.Process("caddy", [caddy, "run", "--config", path, "--adapter", "caddyfile"],
                           os.path.join(env.work, "caddy.log"), env=caddy_env)


PROXIES = {"nginx": start_nginx, "caddy": start_caddy}


class Env:
    def __init__(self, proxy, work):
        self.proxy = proxy
        self.work = work
        self.pki = harness.Pki(os.path.join(work, "pki"))
        pki = self.pki
        self.identities = {
            "none": (None, None),
            "frontend": (pki.spiffe_client("frontend", "spiffe://" + FRONTEND), FRONTEND),
            "prod-api": (pki.spiffe_client("prod-api", "spiffe://cluster.local/ns/prod/sa/api"),
                         "cluster.local/ns/prod/sa/api"),
            "other-ns": (pki.spiffe_client("other-ns", "spiffe://cluster.local/ns/other/sa/x"),
                         "cluster.local/ns/other/sa/x"),
            "other-td": (pki.spiffe_client("other-td", "spiffe://other.td/ns/default/sa/frontend"),
                         "other.td/ns/default/sa/frontend"),
            # No URI SAN: a verified certificate without a SPIFFE id is a plaintext peer.
            "dns-only": (pki.issue("dns-only", "subjectAltName=DNS:frontend.example\n"
                                   "extendedKeyUsage=clientAuth\n"), None),
            # The first spiffe:// URI SAN is the principal.
            "two-uris": (pki.issue("two-uris", "subjectAltName=URI:https://frontend.example/id,"
                                   "URI:spiffe://%s,URI:spiffe://cluster.local/ns/other/sa/x\n"
                                   "extendedKeyUsage=clientAuth\n" % FRONTEND), FRONTEND),
        }
        self.contexts = {name: pki.context(cert) for name, (cert, _) in self.identities.items()}
        self.app = harness.App(work)
        self.reserved = harness.ReservedPort()  # the proxy's, in the policies' `ports`
        self.port = self.reserved.port
        self.health_reserved = harness.ReservedPort()  # the kubelet's readiness probe
        self.health_port = self.health_reserved.port
        self.manifests = os.path.join(work, "manifests")
        harness.write_manifests(self.manifests, cluster(self.port))
        self.controller = harness.Controller(work, self.manifests).start()
        self.state_dir = os.path.join(work, "state")
        self.agent_port = 0  # the first agent's; every later agent listens on it again
        self.agent = self.start_agent("agent")
        self.agent_port = self.agent.port
        self.proxy_process = PROXIES[proxy](self)
        wait_for(lambda: harness.port_open(self.port), "%s to listen on %d" % (proxy, self.port))
        wait_for(lambda: self.readiness() == 200, "%s's readiness endpoint to say ready" % proxy)
        self.sent = 0
        self.expected = []  # (request, controller's decision) from `compare`

    def readiness(self):
        """The status of the kubelet's probe: the agent's /readyz through the proxy."""
        return harness.raw_request(self.health_port, "GET", "/ready", [("Host", "pod")]).status

    def start_agent(self, name, state_dir=None, controller_url=None, pod="backend", ready=True):
        agent = harness.Agent(self.work, name,
                              controller_url or "http://127.0.0.1:%d" % self.controller.port,
                              state_dir or self.state_dir, pod=pod, port=self.agent_port)
        return agent.start(wait_ready=ready)

    def send(self, method, target, host, identity="none", headers=(), body=b""):
        """One request through the proxy; returns (reply, test id). The SNI is the Host's name
        (Caddy refuses a Host that differs from the SNI when it verifies client certificates)."""
        self.sent += 1
        test_id = "t%d" % self.sent
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        sni = None if name.replace(".", "").isdigit() else name
        all_headers = [("Host", host), ("X-Test-Id", test_id)] + list(headers)
        reply = harness.raw_request(self.port, method, target, all_headers, body,
                                    tls=self.contexts[identity], sni=sni)
        return reply, test_id

    def request_json(self, method, target, host, identity="none", headers=()):
        """The request as the controller should decide it: what the client sent."""
        request = {"method": method, "path": target, "host": host, "port": self.port,
                   "source": {"ip": "127.0.0.1"}}
        principal = self.identities[identity][1]
        if principal:
            request["source"]["principal"] = principal
        joined = {}
        for name, value in headers:
            joined.setdefault(name.lower(), []).append(value)
        request["headers"] = joined
        return request


def outcome(reply):
    """ALLOW (the application answered), DENY (403 with the agent's decision) or REFUSED."""
    if reply.status == 200 and reply.header("x-app") == "yes":
        return "ALLOW"
    if reply.status == 403 and reply.header("x-tollgate-decision") == "DENY":
        return "DENY"
    return "REFUSED %d %s" % (reply.status, reply.error)


def expect(env, what, reply, decision, test_id=None, principal=None, **seen):
    got = outcome(reply)
    if got != decision:
        fail("%s: expected %s through %s, got %s: %r" % (what, decision, env.proxy, got, reply))
    if test_id is None:
        return
    entry = env.agent.decisions().get(test_id)
    if entry is None:
        fail("%s: the agent logged no decision for %s" % (what, test_id))
    request = entry["request"]
    if request.get("principal") != principal:
        fail("%s: the agent saw principal %r, not %r" % (what, request.get("principal"), principal))
    for key, value in seen.items():
        if request.get(key) != value:
            fail("%s: the agent saw %s %r, not %r" % (what, key, request.get(key), value))


# --- the phases ---

def identity(env):
    r, t = env.send("GET", "/api/v1/data", "backend", "frontend")
    expect(env, "frontend's certificate", r, "ALLOW", t, FRONTEND, method="GET",
           path="/api/v1/data", host="backend", port=env.port, sourceIp="127.0.0.1")
    r, t = env.send("GET", "/api/v1/data", "backend", "two-uris")
    expect(env, "a certificate whose first spiffe:// URI SAN is frontend", r, "ALLOW", t, FRONTEND)
    r, t = env.send("GET", "/api/v1/data", "backend", "none")
    expect(env, "no certificate", r, "DENY", t, None)
    # hosts: ["api.example:8443"] for frontend: the Host as sent, port included.
    r, t = env.send("POST", "/items", "api.example:8443", "frontend", body=b"x")
    expect(env, "a Host with a port", r, "ALLOW", t, FRONTEND, method="POST", path="/items",
           host="api.example:8443")
    r, t = env.send("POST", "/items", "api.example", "frontend", body=b"x")
    expect(env, "the Host without the port", r, "DENY", t, FRONTEND, host="api.example")
    r, t = env.send("GET", "/api/v1/data", "backend", "other-ns")
    expect(env, "another namespace's certificate", r, "DENY", t, "cluster.local/ns/other/sa/x")
    r, t = env.send("GET", "/api/v1/data", "backend", "dns-only")
    expect(env, "a certificate without a SPIFFE id", r, "DENY", t, None)
    # frontend's SPIFFE id from a CA the proxy does not trust: refused before any decision.
    rogue = env.pki.spiffe_client("rogue-frontend", "spiffe://" + FRONTEND,
                                  ca=(env.pki.rogue_crt, env.pki.rogue_key))
    env.contexts["rogue"] = env.pki.context(rogue)
    r, t = env.send("GET", "/api/v1/data", "backend", "rogue")
    if 200 <= r.status < 300:
        fail("a certificate from an untrusted CA got %r" % r)
    if t in env.agent.decisions():
        fail("a certificate from an untrusted CA reached the agent: %r" % env.agent.decisions()[t])


def forgery(env):
    pem = env.pki.pem(env.identities["frontend"][0][0])
    der64 = base64.b64encode(base64.b64decode("".join(
        line for line in pem.splitlines() if not line.startswith("-----")))).decode()
    cert_forms = {"URL-escaped PEM": urllib.parse.quote(pem, safe=""), "base64 DER": der64}
    for identity_name, principal in (("none", None), ("other-ns", "cluster.local/ns/other/sa/x")):
        for form, value in cert_forms.items():
            r, t = env.send("GET", "/api/v1/data", "backend", identity_name,
                            [("X-Forwarded-Tls-Client-Cert", value)])
            expect(env, "a forged X-Forwarded-Tls-Client-Cert (%s, peer %s)" % (form, identity_name),
                   r, "DENY", t, principal)
        r, t = env.send("GET", "/api/v1/data", "backend", identity_name,
                        [("X-Forwarded-Client-Cert", "By=spiffe://cluster.local/ns/default/sa/"
                          "backend;URI=spiffe://" + FRONTEND)])
        expect(env, "a forged X-Forwarded-Client-Cert (peer %s)" % identity_name, r, "DENY", t,
               principal)
    # frontend may GET /api/*; it may not reach /admin or DELETE, whatever it claims.
    for name in ("X-Original-URI", "X-Forwarded-Uri"):
        r, t = env.send("GET", "/admin", "backend", "frontend", [(name, "/api/v1/data")])
        expect(env, "a forged %s" % name, r, "DENY", t, FRONTEND, path="/admin")
        r, t = env.send("GET", "/elsewhere", "backend", "frontend", [(name, "/api/v1/data")])
        expect(env, "a forged %s" % name, r, "DENY", t, FRONTEND, path="/elsewhere")
    for name in ("X-Original-Method", "X-Forwarded-Method"):
        r, t = env.send("DELETE", "/api/v1/data", "backend", "frontend", [(name, "GET")])
        expect(env, "a forged %s" % name, r, "DENY", t, FRONTEND, method="DELETE")
    # remoteIpBlocks 10.0.0.0/8 and ports [1] allow anything: only forged headers could match.
    for name in ("X-Real-IP", "X-Forwarded-For"):
        r, t = env.send("GET", "/internal", "backend", "none", [(name, "10.1.2.3")])
        expect(env, "a forged %s" % name, r, "DENY", t, None, sourceIp="127.0.0.1",
               remoteIp="127.0.0.1")
    r, t = env.send("GET", "/internal", "backend", "none", [("X-Forwarded-Port", "1")])
    expect(env, "a forged X-Forwarded-Port", r, "DENY", t, None, port=env.port)
    r, t = env.send("GET", "/public/x", "backend", "none", [("X-Forwarded-Host", "public.example")])
    expect(env, "a forged X-Forwarded-Host", r, "DENY", t, None, host="backend")
    r, t = env.send("GET", "/public/x", "public.example", "none")
    expect(env, "the same request with that Host", r, "ALLOW", t, None, host="public.example")


def change(env):
    """A DENY policy for frontend's GET, written into the controller's directory, then removed."""
    before = env.agent.table()
    r, t = env.send("GET", "/api/v1/data", "backend", "frontend")
    expect(env, "before the change", r, "ALLOW", t, FRONTEND)
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "deny-data-now", "namespace": "default"},
              "spec": {"selector": {"matchLabels": {"app": "backend"}}, "action": "DENY",
                       "rules": [{"to": [{"operation": {"paths": ["/api/v1/data"]}}]}]}}
    path = os.path.join(env.manifests, "authorizationpolicy-deny-data-now.json")
    written = time.monotonic()
    harness.write_atomically(path, json.dumps(policy))
    new = wait_for(lambda: (lambda e: e if e and e != before else None)(env.controller.etag()),
                   "the controller to publish the new table")
    wait_for(lambda: env.agent.table() == new, "the agent to activate table %s" % new)
    print("  the change reached the agent %.0f ms after the file was written"
          % ((time.monotonic() - written) * 1000))
    r, t = env.send("GET", "/api/v1/data", "backend", "frontend")
    expect(env, "after the change", r, "DENY", t, FRONTEND)
    if env.agent.decisions()[t]["decision"].get("policy") != "default/deny-data-now":
        fail("the new policy did not decide: %r" % env.agent.decisions()[t])
    os.unlink(path)
    wait_for(lambda: env.agent.table() == before, "the agent to go back to table %s" % before)
    r, t = env.send("GET", "/api/v1/data", "backend", "frontend")
    expect(env, "after the policy is removed", r, "ALLOW", t, FRONTEND)


METHODS = ["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PURGE"]
PATHS = ["/api/v1/data", "/api/v1/data?x=1&y=%2F", "/api//v1/data", "/api/./v1/data",
         "/api/v1/../v1/data", "/api/%2e%2e/admin", "/api/v1/%7Edata", "/api/caf%C3%A9",
         "/public/index.html", "/public/../admin", "/public/%2E%2E/admin", "/public/%2e%2e/api/x",
         "/admin", "/Admin", "/admin/", "/admin/x?y=1", "/admin%2Fx", "/keyed/a", "/keyed/",
         "/internal", "/", "/api", "/api/", "/api/v1/data#frag", "/api\\v1\\data",
         "/api/v1/data;param", "/%61pi/v1/data", "/api/v1/%00", "/../admin", "/api/v1/data/."]
HOSTS = ["backend", "backend.default.svc.cluster.local", "Backend.Default.svc.cluster.local:8443",
         "api.example:8443", "api.example", "public.example", "PUBLIC.example:8443", "127.0.0.1"]
IDENTITIES = ["none", "none", "frontend", "frontend", "prod-api", "other-ns", "other-td",
              "dns-only", "two-uris"]


def generate(rng, env):
    method = rng.choice(METHODS)
    target = rng.choice(PATHS)
    # An address as Host: nginx decides it; Caddy, which verifies client certificates, refuses
    # a Host that is not the TLS SNI (421), and there is no SNI for an address.
    host = rng.choice(HOSTS if env.proxy == "nginx" else HOSTS[:-1])
    if host == "127.0.0.1":
        host = "127.0.0.1:%d" % env.port
    identity_name = rng.choice(IDENTITIES)
    headers = []
    if rng.random() < 0.3:
        headers.append(("X-Token", rng.choice(["fine", "stolen"])))
        if rng.random() < 0.3:
            headers.append(("x-token", rng.choice(["second", "stolen"])))
    if rng.random() < 0.3:
        headers.append(("X-Api-Key", rng.choice(["k-1", "k-", "nope"])))
    if rng.random() < 0.3:
        headers.append(("Accept", "application/json"))
    body = b"payload" if method in ("POST", "PUT", "PATCH") and rng.random() < 0.7 else b""
    return method, target, host, identity_name, headers, body


def compare(env):
    seed = int(os.environ.get("TOLLGATE_PROXY_SEED") or random.randrange(1 << 30))
    print("  seed %d (TOLLGATE_PROXY_SEED=%d repeats it)" % (seed, seed))
    rng = random.Random(seed)
    mismatches, refused, counts = [], [], {"ALLOW": 0, "DENY": 0}
    sent = []
    for _ in range(REQUESTS):
        method, target, host, identity_name, headers, body = generate(rng, env)
        reply, test_id = env.send(method, target, host, identity_name, headers, body)
        request = env.request_json(method, target, host, identity_name,
                                   [("X-Test-Id", test_id)] + headers)
        sent.append((test_id, request, reply, (method, target, host, identity_name, headers, body)))
    decisions = env.agent.decisions()
    for test_id, request, reply, spec in sent:
        want = env.controller.check(request)
        got = outcome(reply)
        if got.startswith("REFUSED"):
            # The proxy itself refused the request (400 for a path above the root, say): it
            # never reached the agent or the application. Never an allow.
            if 200 <= reply.status < 300 or test_id in decisions:
                fail("%s: %r -> %r" % (test_id, request, reply))
            refused.append((request["method"], request["path"], reply.status))
            continue
        counts[got] += 1
        if want.startswith("ERROR"):
            want = "DENY"  # no decision is a denial
        if got != want:
            mismatches.append("%s: proxy %s, POST /v1/check %s: %s (agent saw %s)"
                              % (test_id, got, want, json.dumps(request),
                                 json.dumps((decisions.get(test_id) or {}).get("request"))))
            continue
        env.expected.append((spec, want))
    print("  %d requests: %d allowed, %d denied, %d refused by %s itself %s"
          % (REQUESTS, counts["ALLOW"], counts["DENY"], len(refused), env.proxy,
             sorted(set(refused))))
    if mismatches:
        fail("%d of %d decisions differ from POST /v1/check:\n  %s"
             % (len(mismatches), REQUESTS, "\n  ".join(mismatches[:20])))
    if counts["ALLOW"] < REQUESTS // 10 or counts["DENY"] < REQUESTS // 10:
        fail("the generated requests are too one-sided to compare: %r" % counts)
    if len(refused) > REQUESTS // 5:
        fail("%s refused %d of %d requests: the comparison covers too few" % (
            env.proxy, len(refused), REQUESTS))


def replay(env, what, n=60):
    """Replays n of `compare`'s requests; each must be decided as the controller decided it."""
    for spec, want in env.expected[:n]:
        method, target, host, identity_name, headers, body = spec
        reply, _ = env.send(method, target, host, identity_name, headers, body)
        if outcome(reply) != want:
            fail("%s: %s %s (host %s, %s) was %s, now %s: %r"
                 % (what, method, target, host, identity_name, want, outcome(reply), reply))


def controller_down(env):
    env.controller.stop()
    wait_for(lambda: (env.agent.ready()[1] or {}).get("controller") == "unreachable",
             "the agent to notice the controller is gone")
    replay(env, "with the controller down")


def restart(env):
    table = env.agent.table()
    if env.agent.stop() != 0:
        fail("the agent did not exit cleanly on SIGTERM:\n" + env.agent.process.output()[-2000:])
    saved = os.listdir(env.state_dir)
    if not saved:
        fail("the state directory is empty after the agent ran")
    env.agent = env.start_agent("agent-restarted")
    status, body = env.agent.ready()
    if body.get("source") != "restored" or body.get("table") != table:
        fail("the restarted agent is not enforcing the saved table %s: %r" % (table, body))
    replay(env, "after a restart with the controller down")


def agent_down(env):
    # Hung (stopped, its port still open): the proxy gives up after its timeout, with a 5xx.
    env.agent.process.popen.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: env.agent.process.stopped(), "the agent to be stopped by SIGSTOP")
        started = time.monotonic()
        reply, _ = env.send("GET", "/api/v1/data", "backend", "frontend")
        if not 500 <= reply.status < 600:
            fail("with the agent hung, frontend's GET got %r (want 5xx)" % reply)
        print("  the agent hung: %d after %.1f s" % (reply.status, time.monotonic() - started))
    finally:
        env.agent.process.popen.send_signal(signal.SIGCONT)
    wait_for(lambda: outcome(env.send("GET", "/api/v1/data", "backend", "frontend")[0]) == "ALLOW",
             "the agent to decide again once resumed")
    env.agent.stop()
    if env.readiness() != 502:
        fail("the readiness probe with the agent down: %d (want 502)" % env.readiness())
    for spec, want in env.expected[:30] + [(("GET", "/api/v1/data", "backend", "frontend", [], b""),
                                            "ALLOW")]:
        method, target, host, identity_name, headers, body = spec
        reply, _ = env.send(method, target, host, identity_name, headers, body)
        if not 500 <= reply.status < 600:
            fail("with the agent down, %s %s got %r (want 5xx)" % (method, target, reply))


def no_table(env):
    # The controller unreachable (it is stopped) and nothing saved.
    for name, url, pod, why in (
            ("agent-unreachable", "http://127.0.0.1:%d" % env.controller.port, "backend",
             "unreachable"),
            ("agent-unknown-pod", None, "not-a-pod", "404")):
        if url is None:
            env.controller.start()  # same port; it does not know the pod
        state = tempfile.mkdtemp(dir=env.work, prefix="state-empty-")
        env.agent = env.start_agent(name, state_dir=state, controller_url=url, pod=pod, ready=False)
        if why == "404":
            wait_for(lambda: "404" in str((env.agent.ready()[1] or {}).get("error", "")),
                     "the agent to be told 404 for an unknown pod")
        status, _ = env.agent.ready()
        if status != 503 or env.readiness() != 503:
            fail("an agent without a table is ready: /readyz %d, through %s %d"
                 % (status, env.proxy, env.readiness()))
        for identity_name in ("frontend", "none"):
            reply, _ = env.send("GET", "/api/v1/data", "backend", identity_name)
            if reply.status != 403 or reply.header("x-tollgate-reason") != "no-table":
                fail("without a table (%s), %s got %r (want 403 with X-Tollgate-Reason: no-table)"
                     % (why, identity_name, reply))
        env.agent.stop()


PHASES = [("identity", identity), ("forgery", forgery), ("change", change), ("compare", compare),
          ("controller", controller_down), ("restart", restart), ("agent-down", agent_down),
          ("no-table", no_table)]


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in PROXIES:
        sys.exit("usage: proxy_test.py nginx|caddy")
    if not harness.TOLLGATE:
        sys.exit("TOLLGATE_BINARY is not set")
    proxy = sys.argv[1]
    harness.run_phases(proxy, "tollgate-proxy-%s-" % proxy, lambda work: Env(proxy, work), PHASES)


if __name__ == "__main__":
    main()
