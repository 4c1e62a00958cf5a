"""What the tests under test/proxy share: a test CA issuing SPIFFE certificates (openssl), the
controller (`tollgate run --manifests`), the agent, the application, the real proxies started
from the configs in examples/agent/, a raw HTTP/1.1 client that sends exactly the bytes it is
given (forged headers, odd paths), and waits on events with deadlines.

Every server listens on 127.0.0.1, on port 0 or a free port found by binding port 0. Every
process is stopped when the test ends, however it ends: at exit, on SIGTERM, and (should the
test process itself be killed) by the kernel, which sends each child SIGTERM when its parent
dies (PR_SET_PDEATHSIG).
"""
import atexit
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

TOLLGATE = os.environ.get("TOLLGATE_BINARY", "")
SOURCE_DIR = os.environ.get(
    "TOLLGATE_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HERE = os.path.dirname(os.path.abspath(__file__))
DEADLINE = 60.0  # seconds, for every wait: a loaded 2-core CI machine under sanitizers is slow
SPIFFE = "spiffe://"

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # Runs in the child between fork and exec. The test process has no threads, so this is safe.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_processes = []


def _stop_all():
    for p in reversed(_processes):
        p.stop()


atexit.register(_stop_all)


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def fail(message):
    raise AssertionError(message)


def wait_for(predicate, what, timeout=DEADLINE):
    """Polls `predicate` until it returns something true; fails naming `what` after `timeout`."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            fail("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.02)


class ReservedPort:
    """A free port, kept bound (not listening) until release(), so that no server binding
    port 0 in the meantime is given it. Release it right before the server that uses it starts."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]

    def release(self):
        self.socket.close()
        return self.port


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def require(program):
    """The path of `program`; fails (never skips) when it is not installed."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not path:
        fail("%s is not installed: scripts/install-deps.sh installs it; this test does not skip"
             % program)
    return path


class Process:
    """A child process with its output in `log`; stop() is idempotent."""

    def __init__(self, name, args, log, env=None):
        self.name = name
        self.args = args
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, env=env,
                                          preexec_fn=_die_with_parent)
        _processes.append(self)

    def alive(self):
        return self.popen.poll() is None

    def stopped(self):
        """True once every thread is stopped (SIGSTOP), so none can answer anything."""
        tasks = "/proc/%d/task" % self.popen.pid
        try:
            states = []
            for tid in os.listdir(tasks):
                with open(os.path.join(tasks, tid, "stat")) as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            return False
        return bool(states) and all(state in ("T", "t") for state in states)

    def stop(self, sig=signal.SIGTERM):
        if self.popen.poll() is not None:
            return self.popen.returncode
        self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def output(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")


def read_port_file(path, process):
    def ready():
        if not process.alive():
            fail("%s exited with %s before listening:\n%s"
                 % (process.name, process.popen.returncode, process.output()[-3000:]))
        try:
            with open(path) as f:
                text = f.read().strip()
            return int(text) if text else 0
        except (OSError, ValueError):
            return 0
    return wait_for(ready, "%s's port file %s" % (process.name, path))


# --- HTTP ---

class Reply:
    def __init__(self, status=0, headers=None, body=b"", error=""):
        self.status = status
        self.headers = headers or {}  # lower-case name -> list of values
        self.body = body
        self.error = error

    def header(self, name):
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def __repr__(self):
        return "Reply(%d%s, %s, %r)" % (self.status, ", " + self.error if self.error else "",
                                         {k: v for k, v in self.headers.items()
                                          if k.startswith("x-")}, self.body[:200])


def raw_request(port, method, target, headers=(), body=b"", tls=None, sni=None, timeout=30,
                version="HTTP/1.1"):
    """Sends one request exactly as given (no header is added but Content-Length for a body
    and Connection: close), over TLS when `tls` is an SSLContext, and reads the answer to EOF.
    A connection or TLS failure is Reply(status=0, error=...)."""
    lines = ["%s %s %s" % (method, target, version)]
    lines += ["%s: %s" % (n, v) for n, v in headers]
    if body:
        lines.append("Content-Length: %d" % len(body))
    lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        return Reply(error="connect: %s" % e)
    try:
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=sni)
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except (OSError, ssl.SSLError) as e:
        return Reply(error="%s: %s" % (type(e).__name__, e))
    finally:
        sock.close()
    head, sep, rest = received.partition(b"\r\n\r\n")
    if not sep:
        return Reply(error="no complete answer: %r" % received[:200])
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    reply = Reply(status=int(parts[1]), body=rest)
    for line in lines[1:]:
        name, _, value = line.partition(":")
        reply.headers.setdefault(name.strip().lower(), []).append(value.strip())
    return reply


def http_json(port, method, path, body=None, headers=None, timeout=30):
    """(status, parsed JSON or raw text, headers) from a plain-HTTP JSON endpoint."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers=headers or {})
        r = conn.getresponse()
        text = r.read().decode("utf-8", "replace")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        return r.status, parsed, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def try_http_json(port, method, path, body=None):
    try:
        return http_json(port, method, path, body, timeout=5)
    except OSError:
        return 0, None, {}


# --- PKI ---

class Pki:
    """A test CA (EC P-256) issuing a server certificate for 127.0.0.1 and localhost, and
    client certificates with the URI SANs asked for; plus a second, untrusted CA."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.openssl = require("openssl")
        self.ca_crt, self.ca_key = self._ca("ca", "tollgate test CA")
        self.rogue_crt, self.rogue_key = self._ca("rogue-ca", "not the mesh CA")
        self.server_crt, self.server_key = self.issue(
            "server", "subjectAltName=DNS:localhost,DNS:backend,"
            "DNS:backend.default.svc.cluster.local,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")

    def _run(self, *args):
        r = subprocess.run([self.openssl] + list(args), cwd=self.dir, capture_output=True)
        if r.returncode != 0:
            fail("openssl %s: %s" % (" ".join(args), r.stderr.decode()))

    def _ca(self, name, cn):
        crt, key = os.path.join(self.dir, name + ".crt"), os.path.join(self.dir, name + ".key")
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=" + cn)
        return crt, key

    def issue(self, name, extensions, ca=None):
        """A certificate signed by the test CA (or `ca`, a (crt, key) pair)."""
        ca_crt, ca_key = ca or (self.ca_crt, self.ca_key)
        base = os.path.join(self.dir, name)
        with open(base + ".ext", "w") as f:
            f.write(extensions)
        self._run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", base + ".key", "-out", base + ".csr", "-subj", "/O=tollgate-test/CN=" + name)
        self._run("x509", "-req", "-in", base + ".csr", "-CA", ca_crt, "-CAkey", ca_key,
                  "-CAcreateserial", "-out", base + ".crt", "-days", "2", "-extfile", base + ".ext")
        return base + ".crt", base + ".key"

    def spiffe_client(self, name, uri, ca=None):
        return self.issue(name, "subjectAltName=URI:%s\nextendedKeyUsage=clientAuth\n" % uri, ca)

    def context(self, client=None):
        """A client SSLContext trusting the test CA, presenting `client` (crt, key) if given.
        Host names are not checked: the tests send many Host values to one server."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.ca_crt)
        if client:
            ctx.load_cert_chain(*client)
        return ctx

    def pem(self, crt):
        with open(crt) as f:
            return f.read()


# --- tollgate ---

def write_manifests(directory, objects):
    """Writes each Kubernetes object as its own JSON file (name: <kind>-<name>.json)."""
    os.makedirs(directory, exist_ok=True)
    for o in objects:
        write_atomically(os.path.join(directory, "%s-%s.json" % (o["kind"].lower(), o["metadata"]["name"])),
                         json.dumps(o, indent=1))


def write_atomically(path, text):
    # The temporary file lives outside the watched directory; rename makes the change one event.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.dirname(path)))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def workload(name, labels, service_account):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "app"}]}}


class Controller:
    """`tollgate run --manifests DIR` on a free port. start() again after stop() reuses the
    port, so agents pointed at it reconnect."""

    def __init__(self, work, manifests):
        self.work = work
        self.manifests = manifests
        self.port = 0
        self.process = None

    def start(self):
        port_file = os.path.join(self.work, "controller.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        listen = "127.0.0.1:%d" % self.port
        self.process = Process("tollgate run", [TOLLGATE, "run", "--manifests", self.manifests,
                                                "--listen", listen, "--port-file", port_file,
                                                "--log-level", "debug"],
                               os.path.join(self.work, "controller.log"))
        self.port = read_port_file(port_file, self.process)
        wait_for(lambda: try_http_json(self.port, "GET", "/readyz")[0] == 200,
                 "the controller's /readyz")
        return self

    def stop(self):
        if self.process:
            self.process.stop()

    def check(self, request, pod="backend"):
        """The controller's decision for `request` on `pod`: 'ALLOW', 'DENY' or 'ERROR <status>'."""
        status, body, _ = http_json(self.port, "POST", "/v1/check",
                                    {"workload": {"namespace": "default", "pod": pod},
                                     "request": request})
        if status != 200:
            return "ERROR %d %s" % (status, body)
        return body["decision"]

    def etag(self, pod="backend"):
        status, _, headers = try_http_json(self.port, "GET", "/v1/tables/default/" + pod)
        return headers.get("etag", "").strip('"') if status == 200 else None


class Agent:
    """`tollgate agent` for default/<pod>, with a decision log keeping X-Test-Id."""

    def __init__(self, work, name, controller_url, state_dir, pod="backend", port=0):
        self.work = work
        self.name = name
        self.port = port
        self.controller_url = controller_url
        self.state_dir = state_dir
        self.pod = pod
        self.decision_log = os.path.join(work, name + ".decisions.jsonl")
        self.process = None

    def start(self, wait_ready=True):
        port_file = os.path.join(self.work, self.name + ".port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        self.process = Process(
            "tollgate agent (%s)" % self.name,
            [TOLLGATE, "agent", "--controller", self.controller_url, "--namespace", "default",
             "--pod", self.pod, "--state-dir", self.state_dir,
             "--listen", "127.0.0.1:%d" % self.port, "--port-file", port_file,
             "--decision-log", self.decision_log, "--decision-log-header", "x-test-id",
             "--wait", "30"],
            os.path.join(self.work, self.name + ".log"))
        self.port = read_port_file(port_file, self.process)
        if wait_ready:
            wait_for(lambda: self.ready()[0] == 200, "the agent's /readyz to say ready")
        else:
            wait_for(lambda: try_http_json(self.port, "GET", "/healthz")[0] == 200,
                     "the agent's /healthz")
        return self

    def stop(self):
        if self.process:
            return self.process.stop()
        return None

    def ready(self):
        status, body, _ = try_http_json(self.port, "GET", "/readyz")
        return status, body

    def table(self):
        status, body = self.ready()
        return body.get("table") if status == 200 and isinstance(body, dict) else None

    def decisions(self):
        """Decision-log entries by X-Test-Id."""
        out = {}
        if not os.path.exists(self.decision_log):
            return out
        with open(self.decision_log) as f:
            for line in f:
                entry = json.loads(line)
                request = entry.get("request") or {}
                test_id = (request.get("headers") or {}).get("x-test-id")
                if test_id:
                    out[test_id] = entry
        return out


class App:
    def __init__(self, work):
        port_file = os.path.join(work, "app.port")
        self.process = Process("app", [sys.executable, os.path.join(HERE, "app.py"), port_file],
                               os.path.join(work, "app.log"))
        self.port = read_port_file(port_file, self.process)


def shipped_config(name, replacements, out):
    """Writes examples/agent/<name> to `out` with (old, new) replacements, failing if one no
    longer applies: the tests run the shipped configs as they are, but for ports and paths."""
    with open(os.path.join(SOURCE_DIR, "examples/agent", name)) as f:
        text = f.read()
    for old, new in replacements:
        if old not in text:
            fail("examples/agent/%s no longer contains %r: update the test with the config"
                 % (name, old))
        text = text.replace(old, new)
    with open(out, "w") as f:
        f.write(text)
    return out


SANITIZER_REPORTS = ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer")


def run_phases(title, work_prefix, make_env, phases):
    """Runs each (name, function(env)) of `phases` in order on make_env(work), `work` a new
    temporary directory; on a failure prints the traceback and every process's last log
    lines and keeps `work`. Stops every process, then exits 0 if all phases passed, else 1."""
    work = tempfile.mkdtemp(prefix=work_prefix)
    ok = False
    try:
        env = make_env(work)
        for name, phase in phases:
            started = time.monotonic()
            print("%s: %s" % (title, name), flush=True)
            phase(env)
            print("  ok (%.1f s)" % (time.monotonic() - started), flush=True)
        ok = True
    except (AssertionError, OSError, ValueError, KeyError):
        traceback.print_exc()
        for p in _processes:
            print("\n--- %s (%s), last lines ---\n%s" % (p.name, p.log, p.output()[-2500:]))
    finally:
        _stop_all()
        # A sanitizer build reports some errors (UBSan's, leaks at exit) without failing.
        for p in _processes:
            text = p.output()
            if any(m in text for m in SANITIZER_REPORTS):
                print("\n--- %s (%s) reported ---\n%s" % (p.name, p.log, text[-4000:]))
                ok = False
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("\nkept %s for inspection" % work)
    print("%s: %s" % (title, "all phases passed" if ok else "FAILED"))
    sys.exit(0 if ok else 1)
