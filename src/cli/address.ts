// address.ts — a listen address option (`HOST:PORT`, `[IPv6]:PORT`, or `off`), validated by zod.
import { isIP } from 'node:net';
import { z } from 'zod';

/** Where the agent serves /metrics, /healthz and /readyz unless told otherwise: loopback only, so nothing
 * is exposed beyond the node until asked; 9977, the port deploy/kubernetes probes. */
export const DEFAULT_METRICS_ADDRESS = '127.0.0.1:9977';

/** `HOST:PORT` with a literal IP (port 0: any free port, logged), or `off` (undefined: not served). */
export const listenAddress = z.string().transform((s, ctx) => {
  if (s === 'off') return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || !host || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `${s} is not HOST:PORT ([HOST]:PORT for IPv6) or off` });
    return z.NEVER;
  }
  const family = isIP(host);
  if (family === 0 || (family === 6 && !m[1])) {
    ctx.addIssue({ code: 'custom', message: `${host} is not an IP address (IPv6 in brackets: [::1]:9977)` });
    return z.NEVER;
  }
  return { host, port };
});
