// optional.ts — which of meshredir.bpf.o's optional hooks this kernel can load, tried with a trivial
// program of each hook's type (loaded and closed at once). libbpf loads every program of an object and
// fails the whole object when one does not load, so a program whose hook is missing must have autoload
// off: DNS capture is then off, and the rest of the eBPF mode stays.
import { closeFd } from './fd.js';
import { errnoName } from './errors.js';
import { loadTrivialProgram, ProgType, AttachType } from './raw.js';
import { DNS_PROGRAMS, type DnsProgramName } from './abi.js';
import { faultAt } from '../util/faults.js';

/** Each DNS program's hook as the kernel names it (program type, expected attach type). */
const DNS_HOOKS: Record<DnsProgramName, [number, number]> = {
  mr_dns_release: [ProgType.CGROUP_SOCK, AttachType.INET_SOCK_RELEASE],
  mr_dns_recv4: [ProgType.CGROUP_SOCK_ADDR, AttachType.UDP4_RECVMSG],
  mr_dns_recv6: [ProgType.CGROUP_SOCK_ADDR, AttachType.UDP6_RECVMSG],
  mr_dns_send4: [ProgType.CGROUP_SOCK_ADDR, AttachType.UDP4_SENDMSG],
  mr_dns_send6: [ProgType.CGROUP_SOCK_ADDR, AttachType.UDP6_SENDMSG],
};

/**
 * The DNS programs this kernel cannot load, with why. The fault point `no-hook:<attach>` (e.g.
 * `no-hook:cgroup/recvmsg4`) makes a hook count as missing, for the test of a kernel without it.
 */
export function unloadableDnsPrograms(): Partial<Record<DnsProgramName, string>> {
  const out: Partial<Record<DnsProgramName, string>> = {};
  for (const name of Object.keys(DNS_PROGRAMS) as DnsProgramName[]) {
    const attach = DNS_PROGRAMS[name].attach;
    if (faultAt('no-hook', attach)) {
      out[name] = `${attach}: not offered by this kernel (injected: MESHREDIR_FAULT)`;
      continue;
    }
    const [type, at] = DNS_HOOKS[name];
    const fd = loadTrivialProgram(type, at);
    if (fd < 0) out[name] = `${attach}: bpf_prog_load: ${errnoName(-fd)}`;
    else closeFd(fd);
  }
  return out;
}
