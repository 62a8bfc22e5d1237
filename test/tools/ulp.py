#!/usr/bin/env python3
# ulp.py — connects to HOST PORT and asks for an upper-layer protocol (setsockopt TCP_ULP "tls", as a
# TLS library turning kTLS on would); prints {"ulp": "ok" | errno name}.
import errno
import json
import socket
import sys

s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
try:
    s.setsockopt(socket.SOL_TCP, 31, b"tls")  # TCP_ULP
    r = "ok"
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e.errno))
s.close()
print(json.dumps({"ulp": r}))
