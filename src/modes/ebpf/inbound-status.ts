// inbound-status.ts — the inbound part's status from the pins alone (agent running or not): per policy its
// netns link, the pod addresses in mr_in_addrs, the listener registered per family (its cookie) and the
// counters of mr_sklookup and mr_in_origdst.
import ipaddr from 'ipaddr.js';
import type { BpfMap } from '../../bpf/map.js';
import { AF_INET, IN_STAT_FIELDS, InFlag, type InStatName } from '../../bpf/abi.js';
import type { SockKey } from '../../bpf/inbound.js';
import type { Section } from '../mode.js';
import type { Pins } from './pins.js';

export interface InboundPolicyStatus {
  policy: string;
  slot: number;
  link: { name: string; id?: number; progId?: number; netnsIno: number; attached: boolean; error?: string } | null;
  addresses: string[];
  whenNoProxy: 'reject' | 'pass';
  /** The registered listener's cookie per family (SO_COOKIE), or null: none (connections refused or passed). */
  listeners: { ipv4: string | null; ipv6: string | null };
  counters: Record<InStatName, number>;
}

/** Per-slot inbound counters summed over CPUs. */
export function inboundCounters(pins: Pins, slots: number[]): Map<number, Record<InStatName, number>> {
  return pins.withMaps(['mr_in_stats'], (m) => {
    const map = m.get('mr_in_stats')!;
    return new Map(
      slots.map((slot) => {
        const per = (map.getPerCpu(slot) ?? []) as Record<InStatName, bigint>[];
        const sum = Object.fromEntries(
          IN_STAT_FIELDS.map((f) => [f, Number(per.reduce((a, v) => a + v[f], 0n))]),
        ) as Record<InStatName, number>;
        return [slot, sum];
      }),
    );
  });
}

export function inboundPolicies(pins: Pins): InboundPolicyStatus[] {
  if (!pins.has('mr_in_addrs')) return [];
  const names = new Map([...pins.slots()].map(([n, s]) => [s, n]));
  const links = pins.netnsLinks();
  const addrs = pins.entries<[{ family: number; addr: Buffer }, { slot: number; flags: number }][]>('mr_in_addrs');
  const socks = pins.withMaps(['mr_in_socks'], (m) => (m.get('mr_in_socks') as BpfMap<SockKey, bigint>).entries()) as [
    SockKey,
    bigint,
  ][];
  const slots = [...new Set([...links.map((l) => l.slot), ...addrs.map(([, v]) => v.slot)])].sort((a, b) => a - b);
  const counters = inboundCounters(pins, slots);
  return slots.map((slot) => {
    const l = links.find((x) => x.slot === slot);
    const mine = addrs.filter(([, v]) => v.slot === slot);
    const cookie = (family: number) => {
      const s = socks.find(([k]) => k.slot === slot && k.family === family);
      return s ? String(s[1]) : null;
    };
    return {
      policy: names.get(slot) ?? `slot ${slot}`,
      slot,
      link: l
        ? {
            name: l.name,
            ...(l.id !== undefined ? { id: l.id } : {}),
            ...(l.progId !== undefined ? { progId: l.progId } : {}),
            netnsIno: l.netnsIno ?? 0,
            attached: l.attached,
            ...(l.error ? { error: l.error } : {}),
          }
        : null,
      addresses: mine.map(([k]) =>
        ipaddr.fromByteArray([...(k.family === AF_INET ? k.addr.subarray(0, 4) : k.addr)]).toString(),
      ),
      whenNoProxy: mine.some(([, v]) => v.flags & InFlag.PASS) ? 'pass' : 'reject',
      listeners: { ipv4: cookie(AF_INET), ipv6: cookie(10) },
      counters: counters.get(slot)!,
    };
  });
}

export function inboundStatus(pins: Pins): { json: unknown; sections: Section[] } {
  const policies = inboundPolicies(pins);
  if (policies.length === 0) return { json: [], sections: [] };
  const problems = policies.flatMap((p) => {
    const out: string[] = [];
    if (!p.link?.attached)
      out.push(
        `${p.policy}: ${p.link ? 'its netns is gone (link defunct); removed at the next reconcile' : 'no link'}`,
      );
    for (const [fam, v] of [
      ['IPv4', p.listeners.ipv4],
      ['IPv6', p.listeners.ipv6],
    ] as const) {
      const has = p.addresses.some((a) => a.includes(':') === (fam === 'IPv6'));
      if (has && v === null)
        out.push(
          `${p.policy}: no ${fam} listener registered: inbound connections are ${p.whenNoProxy === 'pass' ? 'passed to the app' : 'refused'}`,
        );
    }
    return out;
  });
  const c = (p: InboundPolicyStatus, k: InStatName) => p.counters[k];
  return {
    json: policies,
    sections: [
      {
        table: {
          head: [
            'inbound',
            'netns',
            'link',
            'addresses',
            'listener',
            'intercepted',
            'bypassed',
            'no proxy',
            'origdst',
            'errors',
          ],
          rows: policies.map((p) => [
            p.policy,
            p.link ? (p.link.attached ? `netns:[${p.link.netnsIno}]` : 'GONE') : '-',
            p.link?.id ?? '-',
            p.addresses.join(' ') || '-',
            [p.listeners.ipv4 && `v4 ${p.listeners.ipv4}`, p.listeners.ipv6 && `v6 ${p.listeners.ipv6}`]
              .filter(Boolean)
              .join(', ') || `NONE (${p.whenNoProxy})`,
            c(p, 'intercepted'),
            `${c(p, 'bypass_local')} local, ${c(p, 'bypass_port')} port, ${c(p, 'bypass_source')} source`,
            `${c(p, 'no_proxy_refused')} refused, ${c(p, 'no_proxy_passed')} passed`,
            c(p, 'origdst_served'),
            c(p, 'err_assign'),
          ]),
        },
      },
      ...(problems.length ? [{ lines: problems.map((x) => `inbound: ${x}`) }] : []),
    ],
  };
}
