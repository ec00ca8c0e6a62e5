#!/usr/bin/env python3
"""Polls a ZooKeeper-protocol server until a getData("/") is answered; prints the seconds since
the given start time (epoch seconds, float). Raw protocol, standard library only.
usage: first-read.py HOST:PORT START_EPOCH_SECONDS [TIMEOUT_SECONDS]"""
import socket, struct, sys, time

host, port = sys.argv[1].rsplit(":", 1)
start = float(sys.argv[2])
deadline = time.time() + float(sys.argv[3] if len(sys.argv) > 3 else 600)

def frame(payload):
    return struct.pack(">i", len(payload)) + payload

def read_frame(s):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf
    (length,) = struct.unpack(">i", exact(4))
    return exact(length)

while time.time() < deadline:
    try:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(frame(struct.pack(">iqiqi", 0, 0, 30000, 0, 16) + b"\0" * 16 + b"\0"))
            read_frame(s)
            path = b"/"
            s.sendall(frame(struct.pack(">ii", 1, 4) + struct.pack(">i", len(path)) + path + b"\0"))
            reply = read_frame(s)
            xid, zxid, err = struct.unpack(">iqi", reply[:16])
            if xid == 1 and err == 0:
                print(f"{time.time() - start:.3f}")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.005)
sys.exit("no read was served before the timeout")
