// bench-inbound.test.ts — the inbound scenario's verdict on a sample (pure): errors and empty runs are
// rejected, and so is a sample whose interception counters took fewer connections than reached the listener.
import { describe, expect, it } from 'vitest';
import { judgeInbound, inboundSteps, INBOUND_MODES, INBOUND_RULES } from '../../src/bench/inbound.js';
import { plannedSteps } from '../../src/bench/bench.js';
import { loadResult } from './bench-load.js';

const load = loadResult;

describe('inbound bench samples', () => {
  it('direct needs no counter; an interception must have taken every connection', () => {
    expect(judgeInbound('direct', load(), {})).toEqual([]);
    for (const m of ['iptables', 'iptables+tproxy', 'sk_lookup']) {
      expect(judgeInbound(m, load(), { intercepted: 1000 })).toEqual([]);
      expect(judgeInbound(m, load(), { intercepted: 999 })).toEqual([
        `${m} intercepted 999 of the 1000 connections that reached the listener`,
      ]);
    }
    expect(judgeInbound('sk_lookup', load(), { intercepted: 1000, err_assign: 2 })).toEqual(['err_assign 2']);
  });

  it('client errors and empty runs are rejected', () => {
    expect(judgeInbound('direct', load({ errors: 3, err_connect: 3 }), {})).toEqual([
      '3 client error(s): 3 connect, 0 reset/EOF, 0 other',
    ]);
    expect(judgeInbound('direct', load({ requests: 0, conns: 0 }), {})).toEqual(['no request completed']);
  });

  it('every mode at every rule count, crr and rr, in the plan', () => {
    expect(INBOUND_RULES).toEqual([0, 1000, 10000]);
    expect(inboundSteps(INBOUND_MODES.length)).toBe(24);
    expect(plannedSteps(['inbound'], 2)).toBe(48);
  });
});
