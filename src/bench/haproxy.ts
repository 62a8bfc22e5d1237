// haproxy.ts — the bench's unmodified HAProxy: a transparent frontend on 127.0.0.1:15001 (to each
// connection's original destination) and, when asked, an explicit one on 127.0.0.1:15002 (to a fixed
// upstream), started in the proxy cgroup as uid 1337 so that its own connections are never redirected.
import type { Lab, LabProc } from './lab.js';

export function haproxyConfig(explicitUpstream?: string): string {
  return [
    'global',
    '  maxconn 4096',
    '  nbthread 1',
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 30s',
    '  timeout server 30s',
    'frontend transparent',
    '  bind 127.0.0.1:15001',
    '  default_backend orig',
    'backend orig',
    '  server o 0.0.0.0:0',
    ...(explicitUpstream
      ? [
          'frontend explicit',
          '  bind 127.0.0.1:15002',
          '  default_backend fixed',
          'backend fixed',
          `  server s ${explicitUpstream}`,
        ]
      : []),
    '',
  ].join('\n');
}

/** Starts HAProxy with haproxyConfig(explicitUpstream) written to `file` in the lab, in cgroup `cg`. */
export function startHaproxy(lab: Lab, cg: string, file: string, explicitUpstream?: string): LabProc {
  const cfg = lab.tmpFile(file, haproxyConfig(explicitUpstream));
  return lab.start(cg, 'haproxy', ['-db', '-f', cfg], 1337);
}
