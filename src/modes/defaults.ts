// defaults.ts — where meshredir keeps things on a host unless told otherwise. A module of constants only,
// so that the CLI can show them without loading a mode (and the FFI).
export const DEFAULT_BPFFS = '/sys/fs/bpf/meshredir';
export const DEFAULT_IPTABLES_STATE = '/run/meshredir/iptables.json';
export const DEFAULT_STATE_DIR = '/run/meshredir';
export const DEFAULT_LOCK_WAIT = 10;
