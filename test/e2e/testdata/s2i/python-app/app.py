"""The s2i sample application: serves a greeting over HTTP on port 8080.

With --self-test it serves one request to itself on 127.0.0.1, prints the answer and exits.
"""
import os
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import greeting
import shout


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = (shout.shout(greeting.greet(os.environ.get("APP_GREETING", "hello"), "s2i")) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    if "--self-test" in sys.argv:
        server = HTTPServer(("127.0.0.1", 8080), Handler)
        threading.Thread(target=server.handle_request, daemon=True).start()
        with urllib.request.urlopen("http://127.0.0.1:8080/") as resp:
            sys.stdout.write(resp.read().decode())
        return
    HTTPServer(("", 8080), Handler).serve_forever()


if __name__ == "__main__":
    main()
