"""Leader failover, measured from a client: writes in a loop through the followers, SIGKILLs the
leader, and reports the time from the kill to the first create *sent after the kill* that is
acknowledged. Usage: failover.py LEADER_PID FOLLOWER_HOST:PORT,... -> prints seconds."""
import os, signal, sys, time

from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

pid = int(sys.argv[1])
hosts = sys.argv[2]
client = KazooClient(hosts=hosts, timeout=10, connection_retry=KazooRetry(max_tries=-1, delay=0.01, max_delay=0.05))
client.start(timeout=30)
client.ensure_path("/failover")
for i in range(200):  # warm: the session and the path exist everywhere
    client.create("/failover/w-", b"x", sequence=True)
os.kill(pid, signal.SIGKILL)
killed = time.monotonic()
deadline = killed + 60
while time.monotonic() < deadline:
    sent = time.monotonic()
    try:
        client.create("/failover/w-", b"x", sequence=True)
        print(f"{time.monotonic() - killed:.3f}")
        break
    except Exception:
        time.sleep(0.005)
else:
    print("timeout")
client.stop()
