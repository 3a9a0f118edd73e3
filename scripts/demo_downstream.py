#!/usr/bin/env python3
"""A scripted downstream for `make demo`: answers 503 to the first two attempts of each
event (X-Relay-Attempt 1 and 2), 400 to events whose id contains "reject", 200 otherwise.
Prints one line per request."""
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        event = self.headers.get("x-relay-event-id", "?")
        attempt = int(self.headers.get("x-relay-attempt", "0"))
        if "reject" in event:
            status = 400
        elif attempt <= 2:
            status = 503
        else:
            status = 200
        print(f"  downstream: {event} attempt {attempt} -> {status}", flush=True)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
