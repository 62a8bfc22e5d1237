// zod-errors.ts — zod issues as field-level policy errors ("spec.outbound.excludePorts[2]: …").
import type { z } from 'zod';
import type { PolicyError } from './load.js';

export function fieldPath(path: PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}

const article = (t: string) => (t === 'null' ? 'null' : /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`);

export function zodErrors(file: string, prefix: string, err: z.ZodError): PolicyError[] {
  return err.issues.map((i) => {
    let message = i.message;
    if (i.code === 'unrecognized_keys')
      message = `unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => JSON.stringify(k)).join(', ')}`;
    else if (i.code === 'invalid_type' && i.message.startsWith('Invalid input')) {
      // "Invalid input: expected object, received string": absent is "required", present is a wrong type.
      const received = /received (\w+)$/.exec(i.message)?.[1];
      message =
        received === undefined || received === 'undefined'
          ? `is required (${i.expected})`
          : `must be ${article(i.expected)}, not ${article(received)}`;
    }
    return { file, path: prefix + fieldPath(i.path), message };
  });
}
