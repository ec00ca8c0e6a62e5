#!/usr/bin/env python3
"""Usage: rtt.py [host:port] [seconds]  -- synchronous get() round trips per second via kazoo."""
import sys, time
from kazoo.client import KazooClient

hosts = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:2181"
secs = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
zk = KazooClient(hosts=hosts)
zk.start(timeout=15)
data = b"x" * 100
if zk.exists("/rtt"):
    zk.set("/rtt", data)
else:
    zk.create("/rtt", data)
for _ in range(100):  # warm-up
    zk.get("/rtt")
n = 0
t0 = time.perf_counter()
end = t0 + secs
while time.perf_counter() < end:
    v, _ = zk.get("/rtt")
    n += 1
el = time.perf_counter() - t0
assert v == data
print(f"{hosts}: {n} gets in {el:.2f}s = {n/el:.0f} round trips/s ({el/n*1e6:.0f} us/op)")
zk.stop(); zk.close()
