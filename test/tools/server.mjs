// server.mjs — test upstream: answers every connection with "<name> <peer addr> <peer port>\n"
// (so a test sees who connected: the client directly, or the proxy), then closes.
import net from 'node:net';
const [host, port, name = 'upstream'] = process.argv.slice(2);
const srv = net.createServer((s) => {
  s.on('error', () => {});
  s.end(`${name} ${s.remoteAddress} ${s.remotePort}\n`);
});
srv.listen({ host, port: Number(port), backlog: 4096, ipv6Only: host.includes(':') }, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
