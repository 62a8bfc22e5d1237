// map-info.ts — what the kernel says about a map (bpf_map_info), and how many CPUs a per-CPU value spans.
import { readFileSync } from 'node:fs';
import { lib } from '../sys/libbpf.js';
import { BpfError } from './errors.js';

const INFO_SIZE = 88;

export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
  /** The kernel BTF object describing key and value (0: the map has none), and their type ids in it. */
  btfId: number;
  btfKeyTypeId: number;
  btfValueTypeId: number;
}

export function mapInfo(fd: number, what: string): MapInfo {
  const buf = Buffer.alloc(INFO_SIZE);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(INFO_SIZE);
  const r: number = lib.bpf_obj_get_info_by_fd(fd, buf, len);
  if (r < 0) throw new BpfError(what, 'bpf_obj_get_info_by_fd', r);
  return {
    type: buf.readUInt32LE(0),
    id: buf.readUInt32LE(4),
    keySize: buf.readUInt32LE(8),
    valueSize: buf.readUInt32LE(12),
    maxEntries: buf.readUInt32LE(16),
    flags: buf.readUInt32LE(20),
    name: buf.toString('latin1', 24, 40).replace(/\0.*$/s, ''),
    btfId: buf.readUInt32LE(64),
    btfKeyTypeId: buf.readUInt32LE(68),
    btfValueTypeId: buf.readUInt32LE(72),
  };
}

/** Possible CPUs (not online ones): the kernel sizes per-CPU values by them. */
let possibleCpus: number | undefined;
export function nPossibleCpus(): number {
  if (possibleCpus === undefined) {
    const text = readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
    possibleCpus = 0;
    for (const part of text.split(',')) {
      const [a, b] = part.split('-').map(Number);
      possibleCpus += b === undefined ? 1 : b - (a ?? 0) + 1;
    }
  }
  return possibleCpus;
}
