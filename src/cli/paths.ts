// paths.ts — where the installed package keeps its built BPF object.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEFAULT_OBJECT = process.env.MESHREDIR_BPF_OBJECT ?? join(root, 'build', 'meshredir.bpf.o');
