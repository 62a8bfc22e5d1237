// binding.kernel.test.ts — the libbpf binding end to end on the real kernel: load, typed maps
// checked against BTF, a cgroup link pinned and re-opened by another process, detach, nothing left.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Env, kernelDescribe, sh, OBJECT, ROOT } from './harness.js';
import { BpfObject } from '../../src/bpf/object.js';
import { batchRefused } from '../../src/bpf/map.js';
import { Link } from '../../src/bpf/link.js';
import { BpfError } from '../../src/bpf/errors.js';
import { MAPS, STRUCT_CODECS, portKey, cidrKey } from '../../src/bpf/abi.js';
import { struct } from '../../src/bpf/codec.js';
import { BpfMap } from '../../src/bpf/map.js';

kernelDescribe('libbpf binding', () => {
  let env: Env;
  let obj: BpfObject;
  beforeAll(() => {
    env = new Env();
    obj = BpfObject.open(OBJECT);
    obj.load();
  });
  afterAll(async () => {
    obj?.close();
    obj?.close(); // safe twice
    const problems = await env.teardown();
    expect(problems).toEqual([]);
  });

  it('checks every codec against the object BTF, and notices a drifted one', () => {
    expect(obj.checkAbi(STRUCT_CODECS)).toEqual([]);
    const drifted = struct('mr_port_key', { slot: 'u32', port: 'u32' });
    expect(obj.checkAbi([drifted]).join('\n')).toMatch(/mr_port_key.*(size|offset|missing)/);
  });

  it('typed maps: set/get/delete/entries and batch set, read and delete (hash and LPM trie)', () => {
    const ports = obj.map('mr_ports', MAPS.mr_ports.key, MAPS.mr_ports.value);
    const many = Array.from(
      { length: 5000 },
      (_, i) =>
        [{ slot: 7, port: i + 1, pad: 0 }, 2] as [
          typeof portKey extends { decode(b: Buffer): infer T } ? T : never,
          number,
        ],
    );
    expect(ports.setMany(many)).toBe(5000);
    expect(ports.get({ slot: 7, port: 4242, pad: 0 })).toBe(2);
    expect(ports.get({ slot: 8, port: 4242, pad: 0 })).toBeUndefined();
    expect(ports.entries()).toHaveLength(5000);
    expect(ports.delete({ slot: 7, port: 4242, pad: 0 })).toBe(true);
    expect(ports.delete({ slot: 7, port: 4242, pad: 0 })).toBe(false);
    expect(ports.keys()).toHaveLength(4999);

    const cidrs = obj.map('mr_cidrs', MAPS.mr_cidrs.key, MAPS.mr_cidrs.value);
    const key = (prefix: number, a: number[]) => ({
      prefixlen: 40 + prefix,
      slot: 1,
      family: 2,
      addr: Buffer.from([...a, ...new Array(16 - a.length).fill(0)]),
      pad: Buffer.alloc(3),
    });
    cidrs.setMany([
      [key(8, [10]), 1],
      [key(24, [10, 1, 2]), 2],
    ]);
    // The kernel's longest-prefix match sees both.
    expect(cidrs.get(key(32, [10, 1, 2, 3]))).toBe(2);
    expect(cidrs.get(key(32, [10, 9, 9, 9]))).toBe(1);
    expect(cidrs.get(key(32, [11, 0, 0, 1]))).toBeUndefined();
    // Batches on the LPM trie (the kernel's generic batch commands, since 5.6): write, read back, and
    // delete with a key in the middle that is not there, which is passed over.
    const many24 = Array.from(
      { length: 3000 },
      (_, i) => [key(24, [172, 16 + (i >> 8), i & 255]), 2] as [ReturnType<typeof key>, number],
    );
    expect(cidrs.setMany(many24)).toBe(3000);
    const raw = cidrs.rawEntries();
    expect(raw).toHaveLength(3002);
    expect(batchRefused.get(11)).toBeUndefined(); // this kernel took the batch, no fallback
    expect(cidrs.get(key(32, [172, 16 + (2999 >> 8), 2999 & 255, 9]))).toBe(2);
    const enc = (k: ReturnType<typeof key>) => cidrs.key.encode(k, Buffer.alloc(cidrs.key.size));
    const del = [
      ...many24.slice(0, 1000).map(([k]) => enc(k)),
      enc(key(24, [192, 168, 1])),
      ...many24.slice(1000).map(([k]) => enc(k)),
    ];
    expect(cidrs.deleteManyRaw(del)).toBe(3000);
    expect(cidrs.keys()).toHaveLength(2);
    expect(ports.rawEntries()).toHaveLength(4999);
    void cidrKey;
  });

  it('errors name the operation, the libbpf function and the errno', () => {
    const prog = obj.program('mr_getpeername4');
    let err: unknown;
    try {
      Link.attachCgroup(prog, join(env.cgRootDir, 'does-not-exist'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfError);
    expect((err as BpfError).message).toMatch(/^attach mr_getpeername4 to .*does-not-exist: open: ENOENT/);
    expect((err as BpfError).code).toBe('ENOENT');
  });

  it('a typed map pins, is reopened from the pin, and unpins only its own pin', () => {
    mkdirSync(env.bpffs, { recursive: true, mode: 0o700 });
    const pin = join(env.bpffs, 'ports');
    const ports = obj.map('mr_ports', MAPS.mr_ports.key, MAPS.mr_ports.value);
    const k = { slot: 9, port: 15001, pad: 0 };
    ports.set(k, 1);
    ports.pin(pin);
    const again = BpfMap.open(pin, 'mr_ports', MAPS.mr_ports.key, MAPS.mr_ports.value);
    try {
      expect(again.info.id).toBe(ports.info.id);
      expect(again.get(k)).toBe(1);
      const owners = obj.map('mr_owners', MAPS.mr_owners.key, MAPS.mr_owners.value);
      expect(() => owners.unpin(pin)).toThrow(
        /^unpin map mr_owners at .*ports: the pin is map id \d+, not this map \(id \d+\); left in place$/,
      );
      expect(existsSync(pin)).toBe(true);
      again.unpin(pin);
      expect(existsSync(pin)).toBe(false);
      expect(again.get(k)).toBe(1); // the map lives on while it is held
      let err: unknown;
      try {
        again.unpin(pin);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BpfError);
      expect((err as BpfError).code).toBe('ENOENT');
    } finally {
      again.close();
      again.close(); // safe twice
      rmSync(env.bpffs, { recursive: true, force: true });
    }
  });

  it('attaches through a pinned link, another process re-opens and detaches it, nothing is left', async () => {
    const cg = env.cgroup('binding');
    const dir = env.cgDir(cg);
    mkdirSync(env.bpffs, { recursive: true, mode: 0o700 });
    const pin = join(env.bpffs, 'link');
    const link = Link.attachCgroup(obj.program('mr_getpeername4'), dir);
    link.pin(pin);
    const info = link.info();
    link.close();
    link.close(); // safe twice; the pin keeps it attached
    expect(sh('bpftool', ['cgroup', 'show', dir])).toMatch(/mr_getpeername4/);

    const script = `
      import { Link } from '${join(ROOT, 'dist/bpf/link.js')}';
      const l = Link.open(process.argv[1]);
      const i = l.info();
      l.detach();
      l.unpin();
      l.close();
      console.log(JSON.stringify({ id: i.id, cgroupId: String(i.cgroupId) }));`;
    const out = sh(process.execPath, ['--input-type=module', '-e', script, pin]);
    const other = JSON.parse(out) as { id: number; cgroupId: string };
    expect(other.id).toBe(info.id);
    expect(other.cgroupId).toBe(String(info.cgroupId));
    expect(existsSync(pin)).toBe(false);
    expect(sh('bpftool', ['cgroup', 'show', dir])).not.toMatch(/mr_getpeername4/);
    rmSync(env.bpffs, { recursive: true, force: true });
  });
});
