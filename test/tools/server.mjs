// server.mjs — test upstream: answers every connection with "<name> <peer addr> <peer port>\n"
// (so a test sees who connected: the client directly, or the proxy), then closes — or, with a
// fourth argument "hold", keeps the connection open until the client closes it.
import net from 'node:net';
const [host, port, name = 'upstream', hold] = process.argv.slice(2);
const srv = net.createServer((s) => {
  s.on('error', () => {});
  const line = `${name} ${s.remoteAddress} ${s.remotePort}\n`;
  if (hold === 'hold') {
    s.write(line);
    s.on('end', () => s.end());
  } else s.end(line);
});
srv.listen({ host, port: Number(port), backlog: 4096, ipv6Only: host.includes(':') }, () =>
  process.stdout.write('ready\n'),
);
process.on('SIGTERM', () => process.exit(0));
