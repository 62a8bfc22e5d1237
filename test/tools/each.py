#!/usr/bin/env python3
# each.py — one short TCP connection to each [host, port, uid, gid, cgroup_dir, mark] of a JSON list, in
# turn; prints a JSON list of {data} (what came back until close) or {error} (the errno's name). Needs
# root, and the host's mount namespace (nsenter --net, not ip netns exec, which hides the cgroup2 mount).
#   the socket is created in cgroup_dir (null: where this process is), which -m cgroup looks at;
#   as effective uid/gid, which the owner match sees in the socket's file credentials;
#   with SO_MARK set to mark (0: none), as root (it needs CAP_NET_ADMIN or CAP_NET_RAW).
import errno
import json
import os
import socket
import sys

out = []
for host, port, uid, gid, cg, mark in json.loads(sys.argv[1]):
    if cg:
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    os.setegid(gid)
    os.seteuid(uid)
    try:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    finally:
        os.seteuid(0)
        os.setegid(0)
    try:
        if mark:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        s.settimeout(5)
        s.connect((host, port))
        data = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
        out.append({"data": data.decode().strip()})
    except socket.timeout:
        out.append({"error": "timeout"})
    except OSError as e:
        out.append({"error": errno.errorcode.get(e.errno, str(e))})
    finally:
        s.close()
print(json.dumps(out))
