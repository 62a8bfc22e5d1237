// paths.ts — where the installed package is, and where it keeps its built BPF object.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

/** The package's root: dist/cli/ (tsc's and the bundle's) or src/cli/ is two levels below it. */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const root = ROOT;
export const DEFAULT_OBJECT = process.env.MESHREDIR_BPF_OBJECT ?? join(root, 'build', 'meshredir.bpf.o');
