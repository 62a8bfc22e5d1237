// index.ts — the modes by name. Each is imported when first asked for: the eBPF mode loads the FFI and
// libbpf, which a command that only reads an iptables state file (or prints its version) never needs.
import type { Mode, ModeConfig, ModeName } from './mode.js';
import { MODE_NAMES } from './mode.js';

export async function openMode(name: ModeName, cfg: ModeConfig): Promise<Mode> {
  if (name === 'ebpf') return new (await import('./ebpf/index.js')).EbpfMode(cfg);
  return new (await import('./iptables/index.js')).IptablesMode(cfg);
}

/** Every mode, for the commands that serve whichever is installed (status, verify, cleanup). */
export async function allModes(cfg: ModeConfig): Promise<Mode[]> {
  return Promise.all(MODE_NAMES.map((n) => openMode(n, cfg)));
}
