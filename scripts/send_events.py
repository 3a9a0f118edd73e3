#!/usr/bin/env python3
"""Sends signed Genesys Open Messaging outbound events to a relay, as Genesys Cloud does:
`X-Hub-Signature-256: sha256=<base64 HMAC-SHA256(secret, raw body)>`.

usage: send_events.py URL SECRET ID [ID ...]
"""
import base64
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request

url, secret, ids = sys.argv[1], sys.argv[2].encode(), sys.argv[3:]
for mid in ids:
    body = json.dumps({
        "id": mid,
        "channel": {"platform": "Open", "type": "Private", "messageId": mid,
                    "to": {"id": "customer-42", "idType": "Opaque"},
                    "from": {"id": "agent-7", "idType": "Opaque"},
                    "time": "2026-11-30T09:00:00.000Z"},
        "type": "Text", "text": "Your order has shipped", "direction": "Outbound",
    }, separators=(",", ":")).encode()
    sig = "sha256=" + base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": "application/json", "x-hub-signature-256": sig})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            print(f"  genesys -> relay: {mid}: {r.status} {r.read().decode()}")
    except urllib.error.HTTPError as e:
        print(f"  genesys -> relay: {mid}: {e.code} {e.read().decode()}")
