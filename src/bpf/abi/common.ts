// abi/common.ts — what every part of the ABI shares: limits, address families, the action and two keys.
import { struct } from '../codec.js';
import { cEnum } from './enum.js';

export const Limit = cEnum('mr_limit', 'MR_', { MAX_POLICIES: 4096, MAX_CGROUP_DEPTH: 32, MAX_MARKS: 8 });
export const MAX_POLICIES = Limit.MAX_POLICIES;
/** Bypass marks a policy can hold (mr_policy.marks). */
export const MAX_MARKS = Limit.MAX_MARKS;
// Linux's, not ours: not in BTF (the programs take them from their own defines).
export const AF_INET = 2;
export const AF_INET6 = 10;

export const Action = cEnum('mr_action', 'MR_ACT_', { INCLUDE: 1, EXCLUDE: 2 });

// Keys both the outbound and the inbound part use (mr_ports/mr_in_ports, mr_cidrs/mr_in_srcs).
export const portKey = struct('mr_port_key', { slot: 'u32', port: 'u16', pad: 'u16' });
export const cidrKey = struct('mr_cidr_key', {
  prefixlen: 'u32',
  slot: 'be32',
  family: 'u8',
  addr: { bytes: 16 },
  pad: { bytes: 3 },
});
