#!/usr/bin/env python3
"""A scripted downstream for `make demo`: answers 503 to the first two attempts of each
event (X-Relay-Attempt 1 and 2), 422 to events whose id contains "reject" (200 once the
file given as the second argument exists: the downstream was fixed), 200 otherwise.
Prints one line per request."""
import http.server
import os
import sys

FIXED = sys.argv[2] if len(sys.argv) > 2 else None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        event = self.headers.get("x-relay-event-id", "?")
        attempt = int(self.headers.get("x-relay-attempt", "0"))
        body = b""
        if "reject" in event:
            if FIXED and os.path.exists(FIXED):
                status = 200
            else:
                status, body = 422, b"unknown conversation"
        elif attempt <= 2:
            status = 503
        else:
            status = 200
        print(f"  downstream: {event} attempt {attempt} -> {status}", flush=True)
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
