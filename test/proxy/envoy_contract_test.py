#!/usr/bin/env python3
"""The agent's /v1/authz/envoy endpoint against the requests Envoy's ext_authz http_service
sends with examples/agent/envoy-ext-authz-http.yaml (Envoy is not installable here, so its
calls are replayed byte for byte as Envoy builds them):

    <original method> /v1/authz/envoy<original path and query> HTTP/1.1
    host: <original :authority>                     content-length: 0
    <every original header>                         (allowed_headers: .*)
    x-forwarded-for: [<client's>, ]<peer>           (use_remote_address: true)
    x-forwarded-proto, x-request-id, x-envoy-expected-rq-timeout-ms
    x-forwarded-client-cert: [<client's>,]By=..;Hash=..;URI=<peer's SPIFFE id>
                                                    (SANITIZE_SET; APPEND_FORWARD keeps the
                                                     client's elements first)
    x-forwarded-port: <listener port>               (headers_to_add)

on kept-alive connections, as Envoy's connection pool reuses them. Checked: generated requests
are decided as POST /v1/check decides them; the last XFCC element is the identity, never a
forged earlier one nor a client's X-Forwarded-Tls-Client-Cert or X-Real-IP; answers are only
200 or 403 (Envoy denies any other status too, but a 5xx would be a failure of the agent);
HEAD answers carry no body, so the connection stays usable.
"""
import json
import os
import random
import socket
import sys
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import proxy_test  # noqa: E402  (the policies and the request generator)
from harness import fail  # noqa: E402

LISTENER_PORT = 8443  # Envoy's listener in the example; headers_to_add sends it
PREFIX = "/v1/authz/envoy"
FRONTEND = proxy_test.FRONTEND
IDENTITIES = {"none": None, "frontend": FRONTEND, "prod-api": "cluster.local/ns/prod/sa/api",
              "other-ns": "cluster.local/ns/other/sa/x",
              "other-td": "other.td/ns/default/sa/frontend", "dns-only": ""}
REQUESTS = 300


def xfcc_element(principal):
    """The element Envoy writes for a verified peer certificate (set_current_client_cert_details
    uri: true); a certificate without a URI SAN gets an empty URI."""
    element = ("By=spiffe://cluster.local/ns/default/sa/backend;Hash=%s"
               % ("%064x" % random.getrandbits(256)))
    return element + ";URI=" + ("spiffe://" + principal if principal else "")


def envoy_headers(host, peer, identity, client_headers, client_xff=None, forged_xfcc=None):
    """The headers of Envoy's call for one original request."""
    headers = [("host", host), ("content-length", "0")]
    headers += [(n.lower(), v) for n, v in client_headers]
    headers.append(("x-forwarded-for", (client_xff + ", " if client_xff else "") + peer))
    headers.append(("x-forwarded-proto", "https"))
    headers.append(("x-request-id", str(uuid.uuid4())))
    principal = IDENTITIES[identity]
    if principal is not None:  # an mTLS peer; SANITIZE_SET drops any XFCC of a plaintext one
        element = xfcc_element(principal)
        headers.append(("x-forwarded-client-cert",
                        forged_xfcc + "," + element if forged_xfcc else element))
    headers.append(("x-forwarded-port", str(LISTENER_PORT)))
    headers.append(("x-envoy-expected-rq-timeout-ms", "250"))
    return headers


def expected_request(method, path, host, peer, identity, agent_headers):
    """The request POST /v1/check should decide: what Envoy's RBAC would see."""
    request = {"method": method, "path": path, "host": host, "port": LISTENER_PORT,
               "source": {"ip": peer}}
    if IDENTITIES[identity]:
        request["source"]["principal"] = IDENTITIES[identity]
    protocol = {"host", "content-length", "x-forwarded-client-cert", "x-forwarded-port",
                "x-forwarded-tls-client-cert", "x-real-ip"}
    joined = {}
    for name, value in agent_headers:
        if name not in protocol:
            joined.setdefault(name, []).append(value)
    request["headers"] = joined
    return request


class Connection:
    """One kept-alive HTTP/1.1 connection to the agent, as Envoy's pool holds them."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def close(self):
        self.sock.close()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            fail("the agent closed a kept-alive connection")
        self.buffer += chunk

    def call(self, method, target, headers, body=b""):
        lines = ["%s %s HTTP/1.1" % (method, target)] + ["%s: %s" % h for h in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body)
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        reply = harness.Reply(status=int(lines[0].split(" ")[1]))
        for line in lines[1:]:
            name, _, value = line.partition(":")
            reply.headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = 0 if method == "HEAD" else int(reply.header("content-length") or 0)
        while len(self.buffer) < length:
            self._fill()
        reply.body, self.buffer = self.buffer[:length], self.buffer[length:]
        return reply


class Env:
    def __init__(self, work):
        self.work = work
        self.manifests = os.path.join(work, "manifests")
        harness.write_manifests(self.manifests, proxy_test.cluster(LISTENER_PORT))
        self.controller = harness.Controller(work, self.manifests).start()
        self.agent = harness.Agent(work, "agent", "http://127.0.0.1:%d" % self.controller.port,
                                   os.path.join(work, "state")).start()
        self.connection = Connection(self.agent.port)
        self.sent = 0
        pki = harness.Pki(os.path.join(work, "pki"))
        crt, _ = pki.spiffe_client("frontend", "spiffe://" + FRONTEND)
        self.frontend_pem = urllib.parse.quote(pki.pem(crt), safe="")

    def call(self, method, path, host, identity, client_headers=(), peer="192.0.2.9",
             client_xff=None, forged_xfcc=None, body=b""):
        """Envoy's call for one original request, on the kept-alive connection; returns
        (reply, the headers sent, the test id)."""
        self.sent += 1
        test_id = "e%d" % self.sent
        headers = envoy_headers(host, peer, identity, [("x-test-id", test_id)] + list(client_headers),
                                client_xff, forged_xfcc)
        if body:  # with_request_body: Envoy sends the buffered body and its length
            headers = [(n, str(len(body)) if n == "content-length" else v) for n, v in headers]
        return self.connection.call(method, PREFIX + path, headers, body), headers, test_id


def decision(reply):
    if reply.status == 200 and reply.header("x-tollgate-decision") == "ALLOW":
        return "ALLOW"
    if reply.status == 403 and reply.header("x-tollgate-decision") == "DENY":
        return "DENY"
    fail("an answer Envoy would take for a failure of the agent: %r" % reply)


def seen(env, test_id):
    entry = env.agent.decisions().get(test_id)
    if entry is None:
        fail("the agent logged no decision for %s" % test_id)
    return entry["request"]


def identity(env):
    r, _, t = env.call("GET", "/api/v1/data", "backend", "frontend")
    if decision(r) != "ALLOW" or seen(env, t).get("principal") != FRONTEND:
        fail("frontend's call through Envoy: %r, %r" % (r, seen(env, t)))
    if r.header("x-tollgate-policy") != "default/allow-backend":
        fail("an ALLOW answer names the policy for allowed_upstream_headers: %r" % r)
    # APPEND_FORWARD: the client's own elements come first; Envoy's, last, is the identity.
    r, _, t = env.call("GET", "/api/v1/data", "backend", "other-ns",
                       forged_xfcc="By=spiffe://x;URI=spiffe://" + FRONTEND)
    if decision(r) != "DENY" or seen(env, t).get("principal") != IDENTITIES["other-ns"]:
        fail("a forged first XFCC element was believed: %r, %r" % (r, seen(env, t)))
    r, _, t = env.call("GET", "/api/v1/data", "backend", "frontend",
                       forged_xfcc='By=spiffe://x;URI=spiffe://cluster.local/ns/other/sa/x,'
                                   'Subject="CN=a, O=b";URI=spiffe://cluster.local/ns/evil/sa/e')
    if decision(r) != "ALLOW" or seen(env, t).get("principal") != FRONTEND:
        fail("the last XFCC element was not the identity: %r, %r" % (r, seen(env, t)))
    # A certificate without a URI SAN: a plaintext peer.
    r, _, t = env.call("GET", "/api/v1/data", "backend", "dns-only")
    if decision(r) != "DENY" or seen(env, t).get("principal") is not None:
        fail("an empty URI made an identity: %r, %r" % (r, seen(env, t)))


def forgery(env):
    # Headers Envoy never sets reach the agent only from the client: they are not read.
    for who in ("none", "other-ns"):
        r, _, t = env.call("GET", "/api/v1/data", "backend", who,
                           [("x-forwarded-tls-client-cert", env.frontend_pem)])
        if decision(r) != "DENY" or seen(env, t).get("principal") != IDENTITIES[who]:
            fail("a client's X-Forwarded-Tls-Client-Cert was believed through Envoy: %r, %r"
                 % (r, seen(env, t)))
    r, _, t = env.call("GET", "/internal", "backend", "none", [("x-real-ip", "10.1.2.3")],
                       peer="192.0.2.9")
    if decision(r) != "DENY" or seen(env, t).get("sourceIp") != "192.0.2.9":
        fail("a client's X-Real-IP was believed through Envoy: %r, %r" % (r, seen(env, t)))
    # use_remote_address: the client's X-Forwarded-For comes first, the peer last.
    r, _, t = env.call("GET", "/internal", "backend", "none", client_xff="10.1.2.3",
                       peer="192.0.2.9")
    if decision(r) != "DENY" or seen(env, t).get("sourceIp") != "192.0.2.9":
        fail("a client's X-Forwarded-For hop was believed: %r, %r" % (r, seen(env, t)))
    r, _, t = env.call("GET", "/internal", "backend", "none", peer="10.1.2.3")
    if decision(r) != "ALLOW":
        fail("the peer's own address did not match remoteIpBlocks: %r, %r" % (r, seen(env, t)))


def connection(env):
    """What Envoy's pool does with one connection: methods without and with bodies, HEAD."""
    for method, path, who, peer, want, body in (
            ("HEAD", "/api/v1/data", "frontend", "192.0.2.9", "ALLOW", b""),
            ("HEAD", "/admin", "frontend", "192.0.2.9", "DENY", b""),
            ("POST", "/items", "none", "192.0.2.9", "DENY", b""),
            ("POST", "/items", "frontend", "192.0.2.9", "ALLOW", b"a buffered body"),
            ("PUT", "/items", "frontend", "192.0.2.9", "ALLOW", b"x" * 70000),
            ("GET", "/api/v1/data?q=%2F#x", "frontend", "192.0.2.9", "ALLOW", b""),
            ("OPTIONS", "/", "none", "127.0.0.1", "ALLOW", b""),
            ("OPTIONS", "/", "none", "192.0.2.9", "DENY", b"")):
        host = "api.example:8443" if method in ("POST", "PUT") else "backend"
        r, _, _ = env.call(method, path, host, who, peer=peer, body=body)
        if decision(r) != want:
            fail("%s %s (%s): %r, want %s" % (method, path, who, r, want))
        if method == "HEAD" and r.body:
            fail("a HEAD answer has a body, which would corrupt Envoy's connection: %r" % r)
        if want == "DENY" and method != "HEAD":
            if json.loads(r.body).get("decision") != "DENY":
                fail("a 403 without the decision JSON: %r" % r)


def unreadable(env):
    """A call the agent cannot read is a 403 that says so, never a 5xx."""
    conn = env.connection
    for what, target, headers in (
            ("an X-Forwarded-For hop that is no address", PREFIX + "/x",
             [("host", "backend"), ("x-forwarded-for", "not-an-address")]),
            ("an unterminated XFCC quote", PREFIX + "/x",
             [("host", "backend"), ("x-forwarded-client-cert", 'URI="spiffe://a')]),
            ("no path after the prefix", PREFIX, [("host", "backend")]),
            ("a query right after the prefix", PREFIX + "?a=b", [("host", "backend")])):
        r = conn.call("GET", target, headers + [("content-length", "0")])
        if r.status != 403 or r.header("x-tollgate-reason") != "unreadable-request":
            fail("%s: %r (want 403 unreadable-request)" % (what, r))


class EnvoyShape:
    """What proxy_test.generate needs to know of the proxy."""
    proxy = "envoy"
    port = LISTENER_PORT


def compare(env):
    seed = int(os.environ.get("TOLLGATE_PROXY_SEED") or random.randrange(1 << 30))
    print("  seed %d (TOLLGATE_PROXY_SEED=%d repeats it)" % (seed, seed))
    rng = random.Random(seed)
    counts = {"ALLOW": 0, "DENY": 0}
    mismatches = []
    for _ in range(REQUESTS):
        method, path, host, _, headers, body = proxy_test.generate(rng, EnvoyShape)
        who = rng.choice(list(IDENTITIES))
        peer = rng.choice(["10.0.0.7", "192.0.2.9", "127.0.0.1", "2001:db8::7"])
        client_xff = rng.choice([None, None, "10.1.2.3", "198.51.100.1, 10.9.9.9"])
        forged = rng.choice([None, None, "URI=spiffe://" + FRONTEND])
        if rng.random() < 0.2:
            headers = headers + [("x-forwarded-tls-client-cert", env.frontend_pem)]
        if rng.random() < 0.2:
            headers = headers + [("x-real-ip", "10.1.2.3")]
        reply, sent, test_id = env.call(method, path, host, who, headers, peer, client_xff,
                                        forged if IDENTITIES[who] is not None else None,
                                        body if rng.random() < 0.2 else b"")
        got = decision(reply)
        counts[got] += 1
        want = env.controller.check(expected_request(method, path, host, peer, who, sent))
        if want.startswith("ERROR"):
            want = "DENY"
        if got != want:
            mismatches.append("%s %s %s (%s via %s): agent %s, POST /v1/check %s; agent saw %s"
                              % (test_id, method, path, who, peer, got, want,
                                 json.dumps(seen(env, test_id))))
    print("  %d calls: %d allowed, %d denied" % (REQUESTS, counts["ALLOW"], counts["DENY"]))
    if mismatches:
        fail("%d of %d decisions differ from POST /v1/check:\n  %s"
             % (len(mismatches), REQUESTS, "\n  ".join(mismatches[:20])))
    if min(counts.values()) < REQUESTS // 10:
        fail("the generated calls are too one-sided to compare: %r" % counts)


PHASES = [("identity", identity), ("forgery", forgery), ("connection", connection),
          ("unreadable", unreadable), ("compare", compare)]


def main():
    if not harness.TOLLGATE:
        sys.exit("TOLLGATE_BINARY is not set")
    harness.run_phases("envoy contract", "tollgate-envoy-contract-", Env, PHASES)


if __name__ == "__main__":
    main()
