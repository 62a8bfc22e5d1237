#!/usr/bin/env python3
"""cpu-attrib.py — where a mode's extra CPU per connection goes, by what the kernel was doing it for.

Reads a `perf record -C 0 -g` of a `meshredir bench --only crr --retries 0` run (the client,
bench/mrload, pinned on CPU 0 by --placement split) and that run's JSON. Each measurement starts its own
client process, so the samples of each client pid are one measurement's. Each sample's CPU time (its
period) is charged to the first frame of its call chain, from the leaf up, that is BPF's: the program
(JIT code, with the helpers it calls), socket storage, a hash map, the socket cookie, or the hook's
dispatch around the program; a sample with no such frame is the kernel's own work (TCP, the syscalls,
the machine's level moving between measurements). Summed over a mode's rounds and divided by its
connections: µs of CPU 0 per connection, and the difference to the baseline mode (direct). On loopback
CPU 0 also runs the server's half of each handshake (softirq), hooks included.

Needs perf (Debian: linux-perf). Wrap the bench in perf so that every measurement is recorded:

  perf record -F 5000 -C 0 -g -o perf.data -- \\
    meshredir bench --only crr --modes ebpf --rounds 3 --duration 6 --retries 0 --out DIR
  scripts/cpu-attrib.py perf.data DIR/bench-*.json [--variant 1B]

docs/benchmarks.md ("Redirect-only with one client: where the 9 % go") has runs and their reading.
"""
import argparse
import collections
import json
import re
import subprocess
import sys

# Frames that mark work done for BPF, most specific first: a frame is tested against each in turn.
GROUPS = [
    ("socket storage (create, look up, free at close)",
     r"sk_storage|local_storage|bpf_selem|bpf_map_kzalloc|bpf_map_kmalloc"),
    ("hash maps", r"htab_|^__htab|lookup_nulls_elem_raw|pcpu_freelist"),
    ("socket cookie", r"sock_gen_cookie|get_socket_cookie"),
    ("BPF programs and their helpers", r"^bpf_prog_[0-9a-f]+_|^bpf_jit |^bpf_|^____bpf_"),
    ("hook dispatch", r"__cgroup_bpf_run|bpf_prog_run_array|__bpf_prog_enter|__bpf_prog_exit|bpf_trampoline"),
]
REST = "the kernel's own work (TCP; the machine's level)"


def group_of(chain):
    """The group of the first frame, leaf first, that one of GROUPS matches; REST if none does."""
    for sym in chain:
        for name, rx in GROUPS:
            if re.search(rx, sym):
                return name
    return REST


def per_pid(data, comm):
    """Per pid of `comm`: {group: ns, leaf: Counter of leaf ns}, and the pids in order of first sample."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,period,ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    groups, leaves, order = {}, {}, []
    cur, period, chain = None, 0, []

    def flush():
        if cur and chain:
            groups[cur][group_of(chain)] += period
            leaves[cur][chain[0]] += period

    for ln in out.split("\n") + [""]:
        if not ln.strip():
            flush()
            cur, chain = None, []
            continue
        if not ln.startswith("\t"):  # a sample's header: comm pid period
            parts = ln.split()
            cur = parts[1] if len(parts) >= 3 and parts[0] == comm else None
            if cur and cur not in groups:
                groups[cur], leaves[cur] = collections.Counter(), collections.Counter()
                order.append(cur)
            period = int(parts[2]) if cur else 0
            continue
        if cur:
            f = ln.strip().split(None, 1)
            sym = f[1] if len(f) > 1 else "?"
            if sym.startswith("[unknown]") and f[0].startswith("ffffffffc"):
                sym = "bpf_jit [unknown]"  # JIT-ed BPF code perf did not name (a program or trampoline)
            chain.append(sym)
    return groups, leaves, order


def main():
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("perf_data")
    a.add_argument("bench_json")
    a.add_argument("--variant", default="1B", help="the crr variant: 1B (default) or '1B, 2 clients'")
    a.add_argument("--comm", default="mrload")
    a.add_argument("--top", type=int, default=8, help="leaf functions listed per mode")
    o = a.parse_args()
    samples = json.load(open(o.bench_json))["samples"]
    groups, leaves, order = per_pid(o.perf_data, o.comm)
    # Each measurement's first client (the one on CPU 0) is one pid with most of CPU 0's time; a second
    # client runs on the other CPU and leaves little or nothing here (below 0.1 s: not a measurement's).
    big = [p for p in order if sum(groups[p].values()) > 1e8]
    if len(big) != len(samples):
        sys.exit(f"{len(big)} client pids with samples on CPU 0, {len(samples)} measurements in the run: "
                 "record the whole run (perf record … -- meshredir bench …) with --retries 0")
    per = {}  # mode: (group ns, leaf ns, connections), summed over its rounds
    for pid, s in zip(big, samples):
        conns = (s.get("counters") or {}).get("conns", 0)
        if s["variant"] != o.variant:
            continue
        if s.get("invalid") or not conns:
            print(f"left out: {s['mode']} round {s['round']} ({'; '.join(s.get('invalid') or ['no connections'])})",
                  file=sys.stderr)
            continue
        g, l, c = per.get(s["mode"], (collections.Counter(), collections.Counter(), 0))
        per[s["mode"]] = (g + groups[pid], l + leaves[pid], c + conns)
    if "direct" not in per:
        sys.exit(f"no valid direct measurement of variant {o.variant!r}: nothing to compare with")
    bg, bl, bc = per["direct"]
    us = lambda ns, conns: ns / 1e3 / conns
    print(f"{'mode':28} µs of CPU 0 per connection")
    for mode, (g, _, c) in per.items():
        print(f"{mode:28} {us(sum(g.values()), c):6.2f}")
    for mode, (g, l, c) in per.items():
        if mode == "direct":
            continue
        total = us(sum(g.values()), c) - us(sum(bg.values()), bc)
        print(f"\n{mode} − direct: {total:+.2f} µs per connection")
        for name in [n for n, _ in GROUPS] + [REST]:
            print(f"  {name:50} {us(g[name], c) - us(bg[name], bc):+.2f}")
        diffs = {sym: us(l[sym], c) - us(bl[sym], bc) for sym in set(l) | set(bl)}
        top = sorted(diffs.items(), key=lambda kv: -kv[1])[: o.top]
        print("  leaf functions that grew most:", ", ".join(f"{sym} {d:+.2f}" for sym, d in top))


if __name__ == "__main__":
    main()
