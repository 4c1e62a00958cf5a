#!/usr/bin/env python3
"""The application behind the proxy in test/proxy and scripts/seed-demo.sh: answers every
method on every path with 200, `X-App: yes` and a JSON body naming the request it received.

    app.py PORT_FILE      listens on 127.0.0.1, a free port, written to PORT_FILE
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the proxies' upstream pools expect

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"app": True, "method": self.command, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("X-App", "yes")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name):
        # do_GET, do_POST, do_PURGE...: every method gets the same answer.
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), App)
    server.daemon_threads = True
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.replace(tmp, sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
