// prog.ts — facts about loaded programs by id: name, tag (hash of the instructions), type.
import { lib, c } from '../sys/libbpf.js';
import { BpfError } from './errors.js';

export interface ProgInfo {
  id: number;
  type: number;
  tag: string;
  name: string;
}

export function progInfoByFd(fd: number, what: string): ProgInfo {
  const buf = Buffer.alloc(232);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(buf.length);
  const r: number = lib.bpf_obj_get_info_by_fd(fd, buf, len);
  if (r < 0) throw new BpfError(what, 'bpf_obj_get_info_by_fd', r);
  return {
    type: buf.readUInt32LE(0),
    id: buf.readUInt32LE(4),
    tag: buf.subarray(8, 16).toString('hex'),
    name: buf.toString('latin1', 64, 80).replace(/\0.*$/s, ''),
  };
}

export function progInfoById(id: number): ProgInfo | null {
  const fd: number = lib.bpf_prog_get_fd_by_id(id);
  if (fd < 0) return null;
  try {
    return progInfoByFd(fd, `program ${id}`);
  } finally {
    c.close(fd);
  }
}
