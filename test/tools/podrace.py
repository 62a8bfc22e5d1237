#!/usr/bin/env python3
"""podrace.py — a pod's first instants, for the start-race test: makes the pod cgroup (as the kubelet
does) and a container cgroup below it (as the runtime does), moves itself in, and from that instant
connects in a loop, saying how each connection went, until COUNT connections have been answered (or
10 s have passed).

  podrace.py POD_DIR CTR_DIR HOST PORT COUNT PROXY_ADDR POD_ADDR

Each connection is one of: "proxy" (the upstream saw the proxy's address), "direct" (it saw the pod's),
"refused" (connect() failed with EPERM: the guard), or "error:..."/"other:...". Prints one JSON line:
the CLOCK_MONOTONIC time of the pod cgroup's mkdir (ns), the counts, the kinds in order (run-length
encoded) and the time of the first connection through the proxy."""
import errno
import json
import os
import socket
import sys
import time

pod_dir, ctr_dir, host, port, count, proxy_addr, pod_addr = sys.argv[1:8]
port, count = int(port), int(count)

os.mkdir(pod_dir)
t_mkdir = time.monotonic_ns()
os.mkdir(ctr_dir)
with open(os.path.join(ctr_dir, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
t_in = time.monotonic_ns()

kinds = []
first_proxy = None
answered = 0
while answered < count and time.monotonic_ns() - t_mkdir < 10_000_000_000:
    t = time.monotonic_ns()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
        parts = data.decode(errors="replace").split()
        src = parts[1] if len(parts) > 1 else ""
        kind = "proxy" if src == proxy_addr else "direct" if src == pod_addr else "other:" + " ".join(parts)
    except OSError as e:
        kind = "refused" if e.errno == errno.EPERM else "error:" + errno.errorcode.get(e.errno or 0, str(e))
    finally:
        s.close()
    if kind == "proxy" and first_proxy is None:
        first_proxy = t
    if kind != "refused":
        answered += 1
    kinds.append(kind)

runs = []
for k in kinds:
    if runs and runs[-1][0] == k:
        runs[-1][1] += 1
    else:
        runs.append([k, 1])
counts = {}
for k in kinds:
    counts[k] = counts.get(k, 0) + 1
print(
    json.dumps(
        {
            "mkdirNs": str(t_mkdir),
            "inCgroupNs": str(t_in),
            "firstProxyNs": str(first_proxy) if first_proxy is not None else None,
            "counts": counts,
            "runs": runs,
        }
    )
)
