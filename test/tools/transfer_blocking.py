# transfer_blocking.py — checksummed echo transfer with BLOCKING sockets (transfer.mjs covers the
# non-blocking side): a thread sends SIZE bytes with sendall() then shutdown(SHUT_WR) while the main
# thread reads the echo to EOF; SHA-256 both ways. Prints one JSON line. A 60 s socket timeout names a stall.
import hashlib, json, socket, sys, threading

host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = int(sys.argv[4]) if len(sys.argv) > 4 else 65536
s = socket.create_connection((host, port), timeout=60)
block = bytes((i * 131 + 7) & 0xFF for i in range(1 << 16))
sent = hashlib.sha256()
err = []

def writer():
    try:
        left = size
        while left > 0:
            part = block[: min(chunk, left)]
            s.sendall(part)
            sent.update(part)
            left -= len(part)
        s.shutdown(socket.SHUT_WR)
    except Exception as e:  # reported below
        err.append(repr(e))

t = threading.Thread(target=writer)
t.start()
got, n = hashlib.sha256(), 0
try:
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        got.update(d)
        n += len(d)
except Exception as e:
    err.append(repr(e))
t.join()
s.close()
print(json.dumps({"ok": not err and n == size and got.hexdigest() == sent.hexdigest(), "received": n, "errors": err}))
