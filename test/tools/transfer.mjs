// transfer.mjs — checksummed transfers through an echo path, run inside a pod by the kernel tests.
//   transfer.mjs HOST PORT SIZE [PARALLEL] [CHUNK] [MODE]
// Each connection sends SIZE deterministic bytes in CHUNK-sized writes (honouring back-pressure, so
// the kernel sees partial writes), half-closes (shutdown SHUT_WR), reads the echo to EOF and compares
// SHA-256 both ways. MODE "rst" resets the connection after the first echoed byte instead. A 60 s
// deadline per run names the connections that stalled. Prints one JSON line.
import net from 'node:net';
import { createHash } from 'node:crypto';

const [host, portText, sizeText, parText = '1', chunkText = '65536', mode = 'normal'] = process.argv.slice(2);
const size = Number(sizeText);
const parallel = Number(parText);
const chunk = Number(chunkText);

function pattern(seed, n) {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

function one(i) {
  return new Promise((resolve) => {
    const data = pattern(i + 1, Math.min(size, 1 << 20));
    const sent = createHash('sha256');
    const got = createHash('sha256');
    let received = 0;
    let written = 0;
    const s = net.connect({ host, port: Number(portText), allowHalfOpen: true });
    const state = { i, phase: 'connect', received: 0 };
    const finish = (r) => {
      clearTimeout(s.deadline);
      resolve({ i, ...r });
    };
    s.on('connect', () => {
      state.phase = 'send';
      const pump = () => {
        while (written < size) {
          const off = written % data.length;
          const n = Math.min(chunk, size - written, data.length - off);
          const part = data.subarray(off, off + n);
          sent.update(part);
          written += n;
          if (!s.write(part)) return s.once('drain', pump);
        }
        state.phase = 'half-closed';
        if (mode !== 'rst') s.end();
      };
      pump();
    });
    s.on('data', (d) => {
      received += d.length;
      state.received = received;
      got.update(d);
      if (mode === 'rst') {
        s.resetAndDestroy();
        finish({ ok: true, reset: true });
      }
    });
    s.on('end', () => {
      const ok = received === size && got.digest('hex') === sent.digest('hex');
      finish({ ok, received, eof: true });
      s.destroy();
    });
    s.on('error', (e) => finish({ ok: false, error: e.code ?? e.message, received }));
    s.stalled = state;
    all.push(s);
  });
}

const all = [];
const timer = setTimeout(() => {
  const stalled = all.filter((s) => !s.destroyed).map((s) => s.stalled);
  process.stdout.write(JSON.stringify({ ok: false, stalled }) + '\n');
  process.exit(1);
}, 60_000);
const results = await Promise.all(Array.from({ length: parallel }, (_, i) => one(i)));
clearTimeout(timer);
const bad = results.filter((r) => !r.ok);
process.stdout.write(JSON.stringify({ ok: bad.length === 0, n: results.length, bad: bad.slice(0, 5) }) + '\n');
