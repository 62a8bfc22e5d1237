#!/usr/bin/env python3
# sockopts.py — getsockopt calls that meshredir's getsockopt hook must leave exactly as the kernel
# answered them; prints one JSON object. Run once under the hook and once outside it, then compare.
#   sockopts.py HOST PORT [TABLE]   a TCP connection to HOST:PORT (not redirected), and, with TABLE,
#                                   the iptables-legacy filter table read through a raw socket
#                                   (IPT_SO_GET_ENTRIES: an answer of more than a page)
import ctypes
import json
import os
import socket
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]

SOL_IP, SOL_IPV6, SOL_TCP = 0, 41, 6
SO_ORIGINAL_DST = 80
TCP_INFO, TCP_CONGESTION = 11, 13
IPT_SO_GET_INFO, IPT_SO_GET_ENTRIES = 64, 65


def call(fd, level, name, size, prefill=b""):
    buf = ctypes.create_string_buffer(prefill.ljust(size, b"\0"), size)
    ln = ctypes.c_uint32(size)
    r = libc.getsockopt(fd, level, name, buf, ctypes.byref(ln))
    if r < 0:
        return {"errno": os.strerror(ctypes.get_errno())}
    return {"len": ln.value, "data": buf.raw[: ln.value]}


host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=10)
s.settimeout(None)
fd = s.fileno()
out = {}

info = call(fd, SOL_TCP, TCP_INFO, 8192)  # more than a page offered, a few hundred bytes returned
out["tcp_info"] = {"len": info.get("len"), "state": info["data"][0] if "data" in info else None, "errno": info.get("errno")}
cc = call(fd, SOL_TCP, TCP_CONGESTION, 16)
out["tcp_congestion"] = cc["data"].rstrip(b"\0").decode() if "data" in cc else cc
for label, level, size in [("origdst_v4", SOL_IP, 16), ("origdst_v4_big", SOL_IP, 8192), ("origdst_v6", SOL_IPV6, 28), ("origdst_v6_big", SOL_IPV6, 8192)]:
    r = call(fd, level, SO_ORIGINAL_DST, size)
    out[label] = r.get("errno") or r["data"].hex()
s.close()

if len(sys.argv) > 3:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    name = sys.argv[3].encode()
    gi = call(raw.fileno(), SOL_IP, IPT_SO_GET_INFO, 84, name)
    size = struct.unpack_from("I", gi["data"], 80)[0]
    ge = call(raw.fileno(), SOL_IP, IPT_SO_GET_ENTRIES, 40 + size, name.ljust(32, b"\0") + struct.pack("I", size))
    # The rules' packet counters change with traffic between two runs: compare the shape, not bytes.
    out["ipt_entries"] = {"size": size, "len": ge.get("len"), "errno": ge.get("errno")}
    raw.close()

print(json.dumps(out))
