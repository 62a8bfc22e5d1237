// status.ts — the eBPF mode's status from the pins alone (agent running or not): links and where they
// are attached, policies with their cgroups and counters, map fill, records in flight.
import { STAT_FIELDS, PolicyFlag, CgKind } from '../../bpf/abi.js';
import { cgroupPathById } from '../../util/cgroups.js';
import type { Section, StatusReport } from '../mode.js';
import { stats, pending, pendingBySlot, pendingDrift, fill, fastPath } from './counters.js';
import type { Pins } from './pins.js';
import { traceState } from './trace.js';

/** The parts' status sections (json under their name). */
interface StatusPart {
  name: string;
  status(): { json: unknown; sections: Section[] };
}

export function ebpfStatus(pins: Pins, parts: StatusPart[] = []): StatusReport {
  const links = pins.links().map((l) => ({
    ...l,
    cgroup: l.cgroupId && l.cgroupId !== '0' ? cgroupPathById(BigInt(l.cgroupId)) : null,
  }));
  const counters = stats(pins);
  const cgEntries = pins.entries<[bigint, { kind: number; slot: number }][]>('mr_cgroups');
  const proxies = pins.entries<[{ cgroup_id: bigint; slot: number }, number][]>('mr_proxies');
  const flags = new Map(pins.entries<[number, { flags: number }][]>('mr_policies').map(([slot, p]) => [slot, p.flags]));
  const inFlight = pendingBySlot(pins);
  const policies = [...pins.slots().entries()].map(([name, slot]) => {
    const cg = cgEntries.find(([, v]) => v.slot === slot && v.kind === CgKind.POLICY);
    return {
      name,
      slot,
      cgroup: cg ? cgroupPathById(cg[0]) : null,
      resolved: Boolean(cg),
      bypassCgroups: proxies.filter(([k]) => k.slot === slot).map(([k]) => cgroupPathById(k.cgroup_id)),
      accelerate: Boolean((flags.get(slot) ?? 0) & PolicyFlag.ACCELERATE),
      /** Handshakes in flight now, and the policy's budget (past it, its connects are refused). */
      pending: inFlight.get(slot) ?? { now: 0, limit: 0 },
      counters: Object.fromEntries(STAT_FIELDS.map((f) => [f, Number(counters.get(slot)?.[f] ?? 0n)])),
    };
  });
  const fp = fastPath(pins);
  const records = { ...pending(pins), inTable: pendingDrift(pins).records };
  const maps = fill(pins);
  const attachPoint = links.find((l) => l.cgroup)?.cgroup ?? null;
  // The Kubernetes source's gates: guard entries on the kubepods parents, pass entries of pods that are not
  // enrolled; the guard's refusals are counted in slot 0.
  const gates = {
    guard: cgEntries.filter(([, v]) => v.kind === CgKind.GUARD).map(([id]) => cgroupPathById(id) ?? `id ${id}`),
    pass: cgEntries.filter(([, v]) => v.kind === CgKind.PASS).length,
    refused: Number(counters.get(0)?.guard_refused ?? 0n),
  };
  const tr = traceState(pins);
  const trace = tr && { tracer: tr.tracer, emitted: Number(tr.emitted), lost: Number(tr.lost) };
  const json = {
    bpffs: pins.bpffs,
    attachPoint,
    fastPath: fp.usable ? 'available' : `unavailable: ${fp.why}`,
    links,
    policies,
    maps,
    records,
    unknownOrigDst: Number(counters.get(0)?.origdst_unknown ?? 0n),
    guard: gates,
    trace,
    unsupported: [] as string[],
  };
  const partStatus = parts.map((p) => ({ name: p.name, ...p.status() }));
  for (const p of partStatus) (json as Record<string, unknown>)[p.name] = p.json;
  const sum = (c: Record<string, number>, prefix: string) =>
    Object.entries(c)
      .filter(([k]) => k.startsWith(prefix))
      .reduce((a, [, v]) => a + v, 0);
  return {
    mode: 'ebpf',
    json,
    text: [
      { lines: [`mode ebpf · attached at ${attachPoint ?? '(nowhere)'} · pins ${pins.bpffs}`] },
      {
        table: {
          head: ['program', 'link', 'prog', 'attached at'],
          rows: links.map((l) => [
            l.name,
            l.id ?? '-',
            l.progId ?? '-',
            !l.attached
              ? `DETACHED ${l.error ?? ''}`
              : l.mapId !== undefined
                ? `sockhash (map ${l.mapId})`
                : (l.cgroup ?? `cgroup ${l.cgroupId}`),
          ]),
        },
      },
      {
        table: {
          head: [
            'policy',
            'cgroup',
            'redirected',
            'established',
            'origdst served',
            'bypassed',
            'in flight',
            'accelerated',
            'errors',
          ],
          rows: policies.map((p) => {
            const c = p.counters;
            const accel =
              p.accelerate || c.accel_sockets
                ? `${c.accel_open ?? 0} sockets now, ${c.accel_sockets ?? 0} in all; ${c.msg_fast ?? 0} msgs fast, ${c.msg_slow ?? 0} by TCP`
                : 'off';
            return [
              p.name,
              p.cgroup ?? 'UNRESOLVED',
              c.redirected ?? 0,
              c.established ?? 0,
              c.origdst_served ?? 0,
              sum(c, 'bypass_'),
              `${p.pending.now}/${p.pending.limit}`,
              accel,
              sum(c, 'err_'),
            ];
          }),
        },
      },
      ...(gates.guard.length || gates.pass || gates.refused
        ? [
            {
              lines: [
                `kubernetes guard on ${gates.guard.length ? gates.guard.join(', ') : '(no cgroup)'}: ${gates.refused} connect(s) refused from pod cgroups not classified yet · ${gates.pass} pod(s) not enrolled (pass)`,
              ],
            },
          ]
        : []),
      ...partStatus.flatMap((p) => p.sections),
      { table: { head: ['map', 'entries', 'capacity'], rows: maps.map((m) => [m.map, m.entries, m.max]) } },
      {
        lines: [
          `redirected handshakes in flight: ${records.pending} (connect() is refused past ${records.limit})${records.inTable !== records.pending ? `; ${records.inTable} records in mr_orig` : ''}`,
          trace
            ? `trace: ${trace.tracer === null ? 'off' : `on (meshredir trace, pid ${trace.tracer})`} · ${trace.emitted} events written, ${trace.lost} lost since load`
            : 'trace: unavailable (the installed programs predate it)',
        ],
      },
    ],
  };
}
