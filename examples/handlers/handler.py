#!/usr/bin/env python3
# A crmchat (Bitrix24) event handler, standard library only; see docs/events.md.
#   APPLICATION_TOKEN=demo-app-token python3 handler.py 8000
# then bind http://127.0.0.1:8000/ with event.bind. Prints one line per event: its name and its data as JSON.
import hmac, json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qsl

TOKEN = os.environ["APPLICATION_TOKEN"]  # the application's application_token

def nested(pairs, name):
    """PHP's reading of `data[CHAT_ID]=8773&data[DATA][0][chat][id]=1`: the `name[...]` keys as a tree."""
    tree = {}
    for key, value in pairs:
        if key.startswith(name + "["):
            *path, last = key[len(name) + 1 : -1].split("][")
            node = tree
            for part in path:
                node = node.setdefault(part, {})
            node[last] = value
    return tree

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        pairs = parse_qsl(body, keep_blank_values=True)  # the form body, brackets decoded
        auth = nested(pairs, "auth")
        # Every delivery carries the application's token: anything else did not come from the portal.
        if not hmac.compare_digest(auth.get("application_token", "").encode(), TOKEN.encode()):
            self.send_response(403)
        else:
            print(dict(pairs)["event"], json.dumps(nested(pairs, "data"), separators=(",", ":")), flush=True)
            self.send_response(200)  # a 2xx answer is a delivery; anything else is retried
        self.end_headers()

    def log_message(self, *args):  # no access log on stderr
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8000), Handler).serve_forever()
