#!/usr/bin/env python3
# forge.py — what a process that owns a network namespace can do with a victim's addresses, for the
# isolation tests. Run it in a netns that was given the victim pod's address and the proxy's address.
#   forge.py claim PROXY_ADDR PROXY_PORT SRC SPORT
#       listens on PROXY_ADDR:PROXY_PORT, connects to it from SRC:SPORT (the victim's tuple as the proxy
#       sees it), accepts, and asks SO_ORIGINAL_DST on the accepted socket; prints
#       {"origdst": "a.b.c.d:port"} or {"error": errno name}
import errno
import json
import socket
import struct
import sys

SO_ORIGINAL_DST = 80


def claim(paddr, pport, src, sport):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((paddr, pport))
    ls.listen(8)
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind((src, sport))
    c.connect((paddr, pport))
    a, _ = ls.accept()
    try:
        raw = a.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port, addr = struct.unpack_from("!2xH4s", raw)
        out = {"origdst": f"{socket.inet_ntoa(addr)}:{port}"}
    except OSError as e:
        out = {"error": errno.errorcode.get(e.errno, str(e.errno))}
    for s in (a, c, ls):
        s.close()
    return out


if sys.argv[1] == "claim":
    print(json.dumps(claim(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))), flush=True)
else:
    sys.exit(f"forge.py: unknown command {sys.argv[1]}")
