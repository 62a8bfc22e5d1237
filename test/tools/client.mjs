// client.mjs — test client, run inside a pod (netns + cgroup) by the kernel tests.
//   connect HOST PORT           one connection: JSON with what getpeername said and what came back
//   loop HOST PORT N [EXPECT]   N sequential short connections; counts those whose answer starts with EXPECT
//   until-stdin HOST PORT [EXPECT]  short connections in a loop until stdin closes; same counts;
//                               "progress N" on stderr every 100 connections
//   hold HOST PORT N            N concurrent connections, each reads one line; prints the lines, then
//                               keeps them open until stdin closes (LOCAL_PORT: for N = 1)
//   LOCAL_PORT=n                (env) bind the client's source port (to build identical tuples)
import net from 'node:net';

const [cmd, host, portText, a3, a4] = process.argv.slice(2);
const port = Number(portText);

function once(host = process.argv[3], port = Number(process.argv[4])) {
  return new Promise((resolve) => {
    const s = net.connect({
      host,
      port,
      ...(process.env.LOCAL_PORT ? { localPort: Number(process.env.LOCAL_PORT) } : {}),
    });
    let data = '';
    const t = setTimeout(() => s.destroy(new Error('timeout')), 5000);
    s.on('connect', () => {
      s.peer = { address: s.remoteAddress, port: s.remotePort };
      s.local = { address: s.localAddress, port: s.localPort };
    });
    s.on('data', (d) => (data += d));
    s.on('error', (e) => {
      clearTimeout(t);
      resolve({ ok: false, error: e.code ?? e.message, peer: s.peer ?? null });
    });
    s.on('close', (hadError) => {
      clearTimeout(t);
      if (!hadError) resolve({ ok: true, peer: s.peer, local: s.local, data: data.trim() });
    });
  });
}

if (cmd === 'connect') {
  process.stdout.write(JSON.stringify(await once()) + '\n');
} else if (cmd === 'loop' || cmd === 'until-stdin') {
  const expect = cmd === 'loop' ? a4 : a3;
  const n = cmd === 'loop' ? Number(a3) : Infinity;
  let stop = false;
  if (cmd === 'until-stdin') {
    process.stdin.on('data', () => {});
    process.stdin.on('end', () => (stop = true));
    process.stdin.on('close', () => (stop = true));
  }
  const r = { total: 0, ok: 0, failed: 0, unexpected: 0, firstError: null, firstUnexpected: null };
  for (let i = 0; i < n && !stop; i++) {
    const x = await once();
    r.total++;
    if (!x.ok) {
      r.failed++;
      r.firstError ??= x.error;
    } else if (expect && !x.data.startsWith(expect)) {
      r.unexpected++;
      r.firstUnexpected ??= x.data;
    } else r.ok++;
    if (cmd === 'until-stdin' && r.total % 100 === 0) process.stderr.write(`progress ${r.total}\n`);
  }
  process.stdout.write(JSON.stringify(r) + '\n');
} else if (cmd === 'hold') {
  const n = Number(a3);
  const socks = [];
  const lines = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise((resolve) => {
          const s = net.connect({
            host,
            port,
            ...(process.env.LOCAL_PORT ? { localPort: Number(process.env.LOCAL_PORT) } : {}),
          });
          socks.push(s);
          let data = '';
          s.on('data', (d) => {
            data += d;
            if (data.includes('\n')) resolve(data.trim());
          });
          s.on('error', (e) => resolve(`ERROR ${e.code ?? e.message}`));
          s.on('close', () => resolve(data.trim() || 'CLOSED'));
        }),
    ),
  );
  process.stdout.write(JSON.stringify({ lines }) + '\n');
  process.stdin.on('data', () => {});
  await new Promise((r) => process.stdin.on('close', r));
  for (const s of socks) s.destroy();
} else {
  console.error(`client.mjs: unknown command ${cmd}`);
  process.exit(2);
}
