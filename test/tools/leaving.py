#!/usr/bin/env python3
"""leaving.py — an upload whose upstream answers twice, the second time only when told, for the fast-path
test of a leaving socket whose peer sends once while it holds unread bytes and then goes quiet.

  leaving.py server HOST PORT   one connection: reads the upload to EOF (its SHA-256 and byte count),
                                sends ANSWER_A once 64 KiB have come, ANSWER_B when a line "b" comes on
                                stdin; prints {"received": N, "sha256": H} and closes after the EOF.
  leaving.py client HOST PORT   a non-blocking socket (blocking ones are not accelerated): writes 1 KiB
                                every PACE_US µs (busy-waiting), never reading until a line "read" comes
                                on stdin; then reads exactly ANSWER_A + ANSWER_B, checks every byte, prints
                                "read ok" (or "read bad ...") and keeps writing; at "stop" half-closes,
                                reads to EOF (nothing more may come) and prints {"sent", "sha256", "extra"}.
Every uploaded byte comes from a never-repeating pattern (a 1 MiB random pool at an odd stride): the
server's SHA-256 and count must equal the client's.
"""
import hashlib
import json
import os
import select
import socket
import sys
import time

ANSWER_A = bytes((i * 7 + 1) % 251 for i in range(4096))
ANSWER_B = bytes((i * 13 + 5) % 241 for i in range(4096))
CHUNK = 1024
PACE_US = 20


def server(host, port):
    srv = socket.create_server((host, port))
    print("ready", flush=True)
    conn, _ = srv.accept()
    h, n, sent_a = hashlib.sha256(), 0, False
    conn.setblocking(False)
    stdin_open = True
    while True:
        fds = [conn] + ([sys.stdin] if stdin_open else [])
        r, _, _ = select.select(fds, [], [])
        if sys.stdin in r:
            line = sys.stdin.readline()
            if not line:
                stdin_open = False
            elif line.strip() == "b":
                conn.setblocking(True)
                conn.sendall(ANSWER_B)
                conn.setblocking(False)
        if conn in r:
            try:
                data = conn.recv(1 << 16)
            except BlockingIOError:
                continue
            if not data:
                break
            h.update(data)
            n += len(data)
            if not sent_a and n >= 64 * 1024:
                conn.setblocking(True)
                conn.sendall(ANSWER_A)
                conn.setblocking(False)
                sent_a = True
    print(json.dumps({"received": n, "sha256": h.hexdigest()}), flush=True)
    conn.close()


def client(host, port):
    pool = os.urandom((1 << 20) + CHUNK)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((host, port))
    select.select([], [s], [], 10)
    h, sent, i = hashlib.sha256(), 0, 0
    os.set_blocking(sys.stdin.fileno(), False)
    buf = b""
    writing = True
    nxt = time.perf_counter_ns()
    while writing:
        r, _, _ = select.select([sys.stdin], [], [], 0)
        if r:
            buf += os.read(sys.stdin.fileno(), 4096)
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line == b"read":
                    want = ANSWER_A + ANSWER_B
                    got = b""
                    end = time.time() + 10
                    while len(got) < len(want) and time.time() < end:
                        select.select([s], [], [], 0.1)
                        try:
                            d = s.recv(len(want) - len(got))
                        except BlockingIOError:
                            continue
                        if not d:
                            break
                        got += d
                    if got == want:
                        print("read ok", flush=True)
                    else:
                        at = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), len(got))
                        print(f"read bad: {len(got)} of {len(want)} bytes, first difference at {at}", flush=True)
                elif line == b"stop":
                    writing = False
        if not writing:
            break
        while time.perf_counter_ns() < nxt:
            pass
        nxt += PACE_US * 1000
        off = (i * 1031) % (1 << 20)
        chunk = pool[off : off + CHUNK]
        try:
            k = s.send(chunk)
        except BlockingIOError:
            select.select([], [s], [], 1)
            nxt = time.perf_counter_ns()
            continue
        h.update(chunk[:k])
        sent += k
        if k < CHUNK:
            # A short write: the rest of this chunk first (the pattern must stay contiguous).
            rest = chunk[k:]
            while rest:
                select.select([], [s], [], 1)
                try:
                    k2 = s.send(rest)
                except BlockingIOError:
                    continue
                h.update(rest[:k2])
                sent += k2
                rest = rest[k2:]
        i += 1
    s.shutdown(socket.SHUT_WR)
    extra = 0
    end = time.time() + 20
    while time.time() < end:
        select.select([s], [], [], 0.5)
        try:
            d = s.recv(1 << 16)
        except BlockingIOError:
            continue
        if not d:
            break
        extra += len(d)
    print(json.dumps({"sent": sent, "sha256": h.hexdigest(), "extra": extra}), flush=True)
    s.close()


if __name__ == "__main__":
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    (server if mode == "server" else client)(host, port)
