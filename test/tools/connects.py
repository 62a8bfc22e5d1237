#!/usr/bin/env python3
# connects.py — connect() calls for the trace tests, each from its own forked process so that the trace
# tells them apart by pid: a JSON list of [proto, host, port, uid, gid, mark] ("tcp" or "udp"; uid/gid 0:
# stay root; mark 0: none). Prints a JSON list of {pid, result}: "ok" or the errno's name. A UDP connect
# sends nothing. The credentials are the process's own (setgid/setuid, not seteuid): the programs read
# them with bpf_get_current_uid_gid(), the real ids.
#   flood HOST PORT N  N TCP connects in one process (the same pid), as fast as it can; prints {pid, n}
import errno
import json
import os
import socket
import sys

if sys.argv[1] == "flood":
    host, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(n):
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.connect((host, port))
        except OSError:
            pass  # refused: the decision was made (and traced) before
        s.close()
    print(json.dumps({"pid": os.getpid(), "n": n}))
    sys.exit(0)

out = []
for proto, host, port, uid, gid, mark in json.loads(sys.argv[1]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
            if mark:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)  # as root: needs CAP_NET_ADMIN
            if gid:
                os.setgroups([])
                os.setgid(gid)
            if uid:
                os.setuid(uid)
            s.settimeout(5)
            try:
                s.connect((host, port))
                res = "ok"
            except OSError as e:
                res = errno.errorcode.get(e.errno, str(e))
            s.close()
        except Exception as e:  # noqa: BLE001 — reported, never raised in the child
            res = f"error: {e}"
        os.write(w, res.encode())
        os._exit(0)
    os.close(w)
    res = b""
    while True:
        d = os.read(r, 4096)
        if not d:
            break
        res += d
    os.close(r)
    os.waitpid(pid, 0)
    out.append({"pid": pid, "result": res.decode()})
print(json.dumps(out))
