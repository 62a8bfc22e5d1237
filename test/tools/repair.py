#!/usr/bin/env python3
# repair.py — a connect in TCP_REPAIR mode (the kernel runs the connect and sockops hooks but sends no
# packet), from [SRC:]LOCAL_PORT to HOST PORT; prints {"local": ..., "peer": ...} (or {"error": errno name}
# when connect() is refused) and holds the socket until stdin closes. Two of these with the same port in
# two network namespaces have identical tuples.
#   repair.py HOST PORT LOCAL_PORT [SRC]
import errno
import json
import socket
import sys

host, port, lport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
src = sys.argv[4] if len(sys.argv) > 4 else "0.0.0.0"
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_TCP, 19, 1)  # TCP_REPAIR
s.bind((src, lport))
try:
    s.connect((host, port))
    print(json.dumps({"local": s.getsockname(), "peer": s.getpeername()}), flush=True)
except OSError as e:
    print(json.dumps({"error": errno.errorcode.get(e.errno, str(e.errno))}), flush=True)
sys.stdin.read()
s.close()
