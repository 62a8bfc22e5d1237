// hooks.ts — what each of meshredir's hooks costs: run counts and run time of each attached program
// (BPF run-time statistics, on only while measured), and calls by callback and by side (the cgroup of
// the socket each call ran for) counted by a profiling build of the programs (bpf/mr_prof.h; tracing
// programs, which could count from outside, do not load on every kernel — not on this project's test
// machine). Works on the links of any meshredir build, found by their pins, so that two builds can be
// compared with the same bench.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Link } from '../bpf/link.js';
import { BpfError } from '../bpf/errors.js';
import { BpfMap, mapInfo } from '../bpf/map.js';
import { progStats, progMapsById } from '../bpf/prog.js';
import { struct, u64 } from '../bpf/codec.js';
import { lib } from '../sys/libbpf.js';

export interface AttachedProg {
  /** The link's pin name (mr_sockops, …) and the program running under it (mr_sockops_base, say). */
  link: string;
  name: string;
  id: number;
}

/** The programs attached through the links pinned under `bpffs`. */
export function attachedPrograms(bpffs: string): AttachedProg[] {
  const dir = join(bpffs, 'links');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .sort()
    .flatMap((link) => {
      const l = Link.open(join(dir, link));
      try {
        const id = l.info().progId;
        const s = progStats(id);
        return s ? [{ link, name: s.name, id }] : [];
      } finally {
        l.close();
      }
    });
}

export type Snapshot = Map<number, { runCnt: bigint; runTimeNs: bigint }>;

export function snapshot(progs: AttachedProg[]): Snapshot {
  return new Map(
    progs.flatMap((p) => {
      const s = progStats(p.id);
      return s ? [[p.id, { runCnt: s.runCnt, runTimeNs: s.runTimeNs }] as const] : [];
    }),
  );
}

/** Per program between two snapshots: its calls and the nanoseconds they took. */
export function costs(progs: AttachedProg[], a: Snapshot, b: Snapshot): { link: string; calls: number; ns: number }[] {
  return progs.map((p) => {
    const x = a.get(p.id);
    const y = b.get(p.id);
    return {
      link: p.link,
      calls: x && y ? Number(y.runCnt - x.runCnt) : 0,
      ns: x && y ? Number(y.runTimeNs - x.runTimeNs) : 0,
    };
  });
}

const SOCK_OPS = [
  'VOID',
  'TIMEOUT_INIT',
  'RWND_INIT',
  'TCP_CONNECT_CB',
  'ACTIVE_ESTABLISHED_CB',
  'PASSIVE_ESTABLISHED_CB',
  'NEEDS_ECN',
  'BASE_RTT',
  'RTO_CB',
  'RETRANS_CB',
  'STATE_CB',
  'TCP_LISTEN_CB',
  'RTT_CB',
  'PARSE_HDR_OPT_CB',
  'HDR_OPT_LEN_CB',
  'WRITE_HDR_OPT_CB',
];
const LEVELS: Record<number, string> = { 0: 'SOL_IP', 1: 'SOL_SOCKET', 6: 'SOL_TCP', 41: 'SOL_IPV6' };
const OPTS: Record<string, string> = {
  '1/4': 'SO_ERROR',
  '1/13': 'SO_LINGER',
  '1/2': 'SO_REUSEADDR',
  '1/15': 'SO_REUSEPORT',
  '1/7': 'SO_SNDBUF',
  '1/8': 'SO_RCVBUF',
  '1/9': 'SO_KEEPALIVE',
  '6/1': 'TCP_NODELAY',
  '6/11': 'TCP_INFO',
  '6/31': 'TCP_ULP',
  '0/80': 'SO_ORIGINAL_DST',
  '41/80': 'IP6T_SO_ORIGINAL_DST',
};
/** Per link, what a counted `op` means; in the order of enum mr_hp_prog (bpf/mr_prof.h). */
const WATCH: Record<string, { op: (op: number) => string }> = {
  mr_sockops: { op: (o) => SOCK_OPS[o] ?? `op ${o}` },
  mr_connect4: { op: () => 'connect' },
  mr_connect6: { op: () => 'connect' },
  mr_getpeername4: { op: () => 'getpeername' },
  mr_getpeername6: { op: () => 'getpeername' },
  mr_getsockopt: { op: sockopt },
  mr_setsockopt: { op: sockopt },
  mr_skmsg: { op: () => 'message' },
};
function sockopt(o: number): string {
  const level = o >>> 16;
  const name = o & 0xffff;
  return `${LEVELS[level] ?? level}/${OPTS[`${level}/${name}`] ?? name}`;
}
const PROG_ORDER = Object.keys(WATCH);
const hpKey = struct('mr_hp_key', { prog: 'u32', op: 'u32', cgroup: 'u64' });
const hpValue = struct('mr_hp_val', { calls: 'u64', ns: 'u64' });
type HpKey = { prog: number; op: number; cgroup: bigint };

export interface HookCount {
  link: string;
  op: string;
  cgroup: bigint;
  calls: number;
  /** The calls' run time where the profiling build times them (sockops), else 0. */
  ns: number;
}

/** The call counts of a profiling build (build/meshredir-prof.bpf.o, see bpf/mr_prof.h): its
 * programs' mr_hookprof map, found through the programs (the agent does not pin it). */
export class HookCounts {
  private constructor(
    private map: BpfMap<HpKey, { calls: bigint; ns: bigint }> | BpfMap<HpKey, bigint>,
    private timed: boolean,
  ) {}

  /** null when the attached programs are not a profiling build. */
  static open(progs: AttachedProg[]): HookCounts | null {
    for (const p of progs) {
      const id = progMapsById(p.id)?.get('mr_hookprof');
      if (id === undefined) continue;
      const fd: number = lib.bpf_map_get_fd_by_id(id);
      if (fd < 0) throw new BpfError(`open mr_hookprof (map ${id})`, 'bpf_map_get_fd_by_id', fd);
      // A profiling build older than the sockops timing (--hooks-agent) counts calls only: a u64 value.
      if (mapInfo(fd, 'map mr_hookprof').valueSize === u64.size)
        return new HookCounts(new BpfMap('mr_hookprof', fd, hpKey, u64, true), false);
      return new HookCounts(new BpfMap('mr_hookprof', fd, hpKey, hpValue, true), true);
    }
    return null;
  }

  reset(): void {
    this.map.deleteManyRaw(this.map.rawKeys());
  }

  read(): HookCount[] {
    const entries: [HpKey, { calls: bigint; ns: bigint }][] = this.timed
      ? (this.map as BpfMap<HpKey, { calls: bigint; ns: bigint }>).entries()
      : (this.map as BpfMap<HpKey, bigint>).entries().map(([k, calls]) => [k, { calls, ns: 0n }]);
    return entries.map(([k, v]) => {
      const link = PROG_ORDER[k.prog] ?? `prog ${k.prog}`;
      const op = WATCH[link]?.op(k.op) ?? String(k.op);
      return { link, op, cgroup: k.cgroup, calls: Number(v.calls), ns: Number(v.ns) };
    });
  }

  close(): void {
    this.map.close();
  }
}
