// echo.mjs — test upstream that echoes every byte back and half-closes when the client does.
import net from 'node:net';
const [host, port] = process.argv.slice(2);
const srv = net.createServer({ allowHalfOpen: true }, (s) => {
  s.on('error', () => {});
  s.pipe(s);
});
srv.listen({ host, port: Number(port), backlog: 4096 }, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
