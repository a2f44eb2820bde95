#!/usr/bin/env python3
"""Instructions per removal (callgrind), without and with one bound ONCRMCHATUSERDELETE handler.

Usage: N1=200 N2=1000 REPS=2 python3 bench/callgrind-events.py target/perf/crmchat target/bench/portal.json WORKDIR

PORTAL_JSON is a portal the bench generated (it has the webhooks and the application `local.bench.app`). The
script loads it into WORKDIR/data, starts `crmchat serve` under `valgrind --tool=callgrind`, fills the request
journal with 10,500 `server.time` calls and warms up with 1,000 removals (8 keep-alive clients). Then, REPS times
per setting: `callgrind_control -z`, N1 removals, `callgrind_control -d`; the same with N2; the cost per removal is
(second total - first total) / (N2 - N1), so start-up and idle work cancel out. Unbound first; then an OAuth token
(`crmchat app code`, `/oauth/token/`) and `event.bind` to a sink in this script (outside valgrind), and bound,
where each dump waits until every removal's event was delivered, so a removal's cost includes its delivery.
"""
import http.client, json, os, random, subprocess, sys, threading, time, urllib.parse, glob, re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

crmchat, portal_json, work = sys.argv[1:4]
data = os.path.join(work, "data")
subprocess.run(["rm", "-rf", data], check=True)
t = time.time()
subprocess.run([crmchat, "state", "load", portal_json, "--data-dir", data], check=True, stderr=subprocess.DEVNULL)
print(f"loaded in {time.time() - t:.1f} s", flush=True)
portal = json.load(open(portal_json))
members = [(c["id"], u) for c in portal["chats"] for u in c["members"]]
random.Random(7).shuffle(members)
HOOK = "crmchatBenchHook0006"
N1, N2 = int(os.environ.get("N1", "300")), int(os.environ.get("N2", "2100"))

received = [0]
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            received[0] += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
threading.Thread(target=sink.serve_forever, daemon=True).start()
sink_url = f"http://127.0.0.1:{sink.server_address[1]}/events"

out_prefix = os.path.join(work, "callgrind.out")
for f in glob.glob(out_prefix + "*"):
    os.remove(f)
proc = subprocess.Popen(
    ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_prefix}.%p", crmchat, "serve",
     "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--data-dir", data],
    stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serve.log"), "w"), text=True)
addr = None
for line in proc.stdout:
    if line.startswith("http: http://"):
        addr = line.strip()[len("http: http://"):]
    if line.strip() == "ready":
        break
threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
host, port = addr.rsplit(":", 1)
print(f"serving on {addr} (pid {proc.pid})", flush=True)

cursor = [0]


def worker(n, kind, errors):
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    for _ in range(n):
        if kind == "time":
            conn.request("GET", f"/rest/1/{HOOK}/server.time.json")
        else:
            with lock:
                chat, user = members[cursor[0]]
                cursor[0] += 1
            body = json.dumps({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 1_000_000 + chat, "USER_ID": user, "CHAT_ID": chat})
            conn.request("POST", f"/rest/1/{HOOK}/imopenlines.crm.chat.user.delete.json", body,
                         {"Content-Type": "application/json"})
        r = conn.getresponse()
        b = r.read()
        if r.status != 200:
            errors.append(b[:200])
    conn.close()


def run(total, kind, clients=8):
    errors = []
    per = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    ths = [threading.Thread(target=worker, args=(n, kind, errors)) for n in per]
    [t.start() for t in ths]
    [t.join() for t in ths]
    if errors:
        print("errors:", len(errors), errors[:3], flush=True)


def ctl(flag):
    subprocess.run(["callgrind_control", flag, str(proc.pid)], check=True, stdout=subprocess.DEVNULL)


def last_dump_total():
    files = sorted(glob.glob(f"{out_prefix}.{proc.pid}*"), key=os.path.getmtime)
    text = open(files[-1]).read()
    m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
    return int(m.group(1)), files[-1]


def wait_deliveries(expected, limit=600):
    t = time.time()
    while received[0] < expected and time.time() - t < limit:
        time.sleep(0.05)


def measure(label, bound):
    totals = []
    for n in (N1, N2):
        base = received[0]
        ctl("-z")
        t = time.time()
        run(n, "delete")
        if bound:
            wait_deliveries(base + n)
        else:
            time.sleep(0.5)
        ctl("-d")
        total, f = last_dump_total()
        totals.append(total)
        print(f"{label}: {n} removals in {time.time() - t:.1f} s: {total:,} instructions ({os.path.basename(f)}), "
              f"deliveries received {received[0] - base}", flush=True)
    per = (totals[1] - totals[0]) / (N2 - N1)
    print(f"{label}: {per:,.0f} instructions per removal", flush=True)
    return per


t = time.time()
run(10_500, "time")
print(f"journal filled in {time.time() - t:.1f} s", flush=True)
run(1_000, "delete")
results = {}
for rep in range(int(os.environ.get("REPS", "1"))):
    results.setdefault("unbound", []).append(measure(f"unbound #{rep + 1}", False))
# Bind: OAuth code, token, event.bind.
code = subprocess.run([crmchat, "app", "code", "--client-id", "local.bench.app", "--user", "1", "--data-dir", data],
                      check=True, capture_output=True, text=True).stdout.strip()
c = http.client.HTTPConnection(host, int(port), timeout=120)
c.request("POST", "/oauth/token/", urllib.parse.urlencode({"grant_type": "authorization_code",
          "client_id": "local.bench.app", "client_secret": "crmchatBenchAppSecret", "code": code}),
          {"Content-Type": "application/x-www-form-urlencoded"})
token = json.loads(c.getresponse().read())["access_token"]
c.request("POST", "/rest/event.bind", json.dumps({"event": "ONCRMCHATUSERDELETE", "handler": sink_url}),
          {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
print("bind:", c.getresponse().read()[:100], flush=True)
c.close()
base = received[0]
run(500, "delete")
wait_deliveries(base + 500)
for rep in range(int(os.environ.get("REPS", "1"))):
    results.setdefault("bound", []).append(measure(f"bound #{rep + 1}", True))
print("RESULT", json.dumps(results), flush=True)
proc.terminate()
proc.wait(timeout=120)
