#!/usr/bin/env python3
"""dnsq.py — a tiny DNS client for the DNS capture tests: queries over unconnected UDP (sendto),
connected UDP and TCP, and reports what the application sees: the answer, the address the reply came
from (recvfrom) and getpeername. Prints one JSON line. Only the standard library.

  dnsq.py sendto NAME NS [NS...]     one unconnected socket, one query per NS in turn
  dnsq.py sendto-all NAME NS [NS...] one unconnected socket, every query sent, then every reply read
  dnsq.py connect NAME NS            a connected UDP socket
  dnsq.py hold NAME NS               a connected UDP socket: a query, a JSON line, then (after stdin
                                     closes) another query on the same socket and its JSON line
  dnsq.py tcp NAME NS                TCP
  dnsq.py loop N NAME NS             N short-lived sockets (connected and unconnected, alternately)
  dnsq.py bench N NAME NS [PORT]     N queries in turn on one unconnected socket: qps, p50/p99 in µs
Options (before the mode): --v6sock (AF_INET6 socket, IPv4 NS as v4-mapped), --aaaa, --timeout S,
--sport N (bind the UDP/TCP socket to local port N first).
"""
import json, random, socket, struct, sys

args = sys.argv[1:]
v6sock = aaaa = False
timeout = 3.0
sport = 0
while args and args[0].startswith('--'):
    o = args.pop(0)
    if o == '--v6sock': v6sock = True
    elif o == '--aaaa': aaaa = True
    elif o == '--timeout': timeout = float(args.pop(0))
    elif o == '--sport': sport = int(args.pop(0))
mode = args.pop(0)

def query(name, qid):
    q = struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0)
    for label in name.split('.'):
        q += bytes([len(label)]) + label.encode()
    return q + b'\0' + struct.pack('>HH', 28 if aaaa else 1, 1)

def skip_name(m, i):
    while True:
        n = m[i]
        if n == 0: return i + 1
        if n & 0xc0 == 0xc0: return i + 2
        i += 1 + n

def answer(m):
    qid, flags, qd, an = struct.unpack('>HHHH', m[:8])
    i = 12
    for _ in range(qd): i = skip_name(m, i) + 4
    for _ in range(an):
        i = skip_name(m, i)
        t, _c, _ttl, ln = struct.unpack('>HHIH', m[i:i + 10])
        i += 10
        if t == 1 and ln == 4: return qid, socket.inet_ntop(socket.AF_INET, m[i:i + 4])
        if t == 28 and ln == 16: return qid, socket.inet_ntop(socket.AF_INET6, m[i:i + 16])
        i += ln
    return qid, None

def family(ns):
    return socket.AF_INET6 if (v6sock or ':' in ns) else socket.AF_INET

def addr(ns):
    if v6sock and ':' not in ns: ns = '::ffff:' + ns
    return (ns, 53)

def show(a):
    return None if a is None else {'address': a[0], 'port': a[1]}

def sock(ns, kind=socket.SOCK_DGRAM):
    s = socket.socket(family(ns), kind)
    s.settimeout(timeout)
    if sport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('::' if family(ns) == socket.AF_INET6 else '0.0.0.0', sport))
    return s

def recv_reply(s):
    data, frm = s.recvfrom(4096)
    qid, ip = answer(data)
    return {'id': qid, 'answer': ip, 'from': show(frm)}

def err(e):
    return {'error': type(e).__name__ + (': ' + str(e) if str(e) else '')}

out = {}
try:
    if mode in ('sendto', 'sendto-all'):
        name, servers = args[0], args[1:]
        s = sock(servers[0])
        replies = []
        if mode == 'sendto':
            for n, ns in enumerate(servers):
                s.sendto(query(name, 100 + n), addr(ns))
                replies.append(recv_reply(s))
        else:
            for n, ns in enumerate(servers): s.sendto(query(name, 100 + n), addr(ns))
            for _ in servers: replies.append(recv_reply(s))
        out = {'replies': replies}
    elif mode == 'connect':
        name, ns = args
        s = sock(ns)
        s.connect(addr(ns))
        peer = s.getpeername()
        s.send(query(name, 7))
        out = {'peer': show(peer), **recv_reply(s)}
    elif mode == 'hold':
        name, ns = args
        s = sock(ns)
        s.connect(addr(ns))
        s.send(query(name, 7))
        print(json.dumps({'peer': show(s.getpeername()), **recv_reply(s)}), flush=True)
        sys.stdin.read()
        s.send(query(name, 8))
        out = recv_reply(s)
    elif mode == 'tcp':
        name, ns = args
        s = sock(ns, socket.SOCK_STREAM)
        s.connect(addr(ns))
        peer = s.getpeername()
        q = query(name, 9)
        s.sendall(struct.pack('>H', len(q)) + q)
        buf = b''
        while len(buf) < 2 or len(buf) < 2 + struct.unpack('>H', buf[:2])[0]:
            chunk = s.recv(4096)
            if not chunk: break
            buf += chunk
        qid, ip = answer(buf[2:])
        out = {'peer': show(peer), 'id': qid, 'answer': ip}
    elif mode == 'loop':
        n, name, ns = int(args[0]), args[1], args[2]
        ok, bad, answers, sources = 0, 0, {}, {}
        for i in range(n):
            s = sock(ns)
            try:
                q = query(name, i & 0xffff)
                if i % 2:
                    s.connect(addr(ns)); s.send(q)
                else:
                    s.sendto(q, addr(ns))
                r = recv_reply(s)
                ok += 1
                answers[r['answer']] = answers.get(r['answer'], 0) + 1
                src = r['from']['address']
                sources[src] = sources.get(src, 0) + 1
            except Exception as e:
                bad += 1
            finally:
                s.close()
        out = {'ok': ok, 'failed': bad, 'answers': answers, 'sources': sources}
    elif mode == 'bench':
        import time
        n, name, ns = int(args[0]), args[1], args[2]
        port = int(args[3]) if len(args) > 3 else 53
        s = sock(ns)
        target = (addr(ns)[0], port)
        lat = []
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            s.sendto(query(name, i & 0xffff), target)
            s.recvfrom(4096)
            lat.append(time.perf_counter() - t)
        total = time.perf_counter() - t0
        lat.sort()
        out = {'n': n, 'qps': round(n / total), 'p50_us': round(lat[n // 2] * 1e6), 'p99_us': round(lat[n * 99 // 100] * 1e6)}
    else:
        raise SystemExit('unknown mode ' + mode)
except Exception as e:
    out = {**out, **err(e)}
print(json.dumps(out))
