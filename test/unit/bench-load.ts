// bench-load.ts — one load client's result for the bench verdict tests: a clean run, with what a test needs changed.
import type { LoadResult } from '../../src/bench/checks.js';

/** A clean crr run of 1,000 connections, each answered (no error, nothing streamed); `over` changes fields. */
export const loadResult = (over: Partial<LoadResult> = {}): LoadResult => ({
  mode: 'crr',
  requests: 1000,
  rate: 1000,
  p50_us: 100,
  p99_us: 200,
  errors: 0,
  err_connect: 0,
  err_reset: 0,
  err_other: 0,
  conns: 1000,
  client_user: 0.1,
  client_sys: 0.2,
  wall: 1,
  bytes: 0,
  confirmed: 0,
  mbytes_s: 0,
  e2e_mbytes_s: 0,
  drain_ms: 0,
  ...over,
});
