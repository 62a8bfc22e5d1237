// log.ts — structured logs: one JSON line per event, human-readable when stderr is a terminal.
import pino, { type Logger } from 'pino';

export type { Logger };

export function makeLogger(level = process.env.MESHREDIR_LOG_LEVEL ?? 'info'): Logger {
  if (process.stderr.isTTY) {
    return pino(
      { level, base: undefined },
      pino.transport({
        target: 'pino-pretty',
        options: { destination: 2, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' },
      }),
    );
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}
