#!/usr/bin/env python3
"""cpu-attrib.py — where a mode's extra CPU per connection goes, kernel function by function.

Reads a `perf record -C 0 -g` taken while `meshredir bench --only crr --retries 0` ran (the
client, bench/mrload, pinned on CPU 0 by --placement split) and that run's JSON. Each measurement starts
its own client process, so the samples of each client pid are one measurement's; the leaf function of
each sample, divided by the sampling rate and the measurement's connections, is microseconds of CPU 0
per connection (summed over the rounds of a mode). Prints, for each mode, the difference to the baseline mode (direct) by group, and the
functions that differ most. On loopback CPU 0 also runs the server's half of each handshake (softirq).

  perf record -F 5000 -C 0 -g -o perf.data -- sleep 90 &
  meshredir bench --only crr --modes ebpf --rounds 3 --duration 8 --retries 0 --out DIR
  scripts/cpu-attrib.py perf.data DIR/bench-*.json [--freq 5000] [--variant 1B]

docs/benchmarks.md ("Redirect-only with one client: where the 9 % go") has a run and its reading.
"""
import argparse
import collections
import json
import re
import subprocess

GROUPS = [  # first match wins
    ("BPF programs", r"^bpf_prog_|^bpf_jit "),
    ("hook dispatch", r"cgroup_bpf_run|bpf_prog_enter|bpf_prog_exit|__bpf_prog|tcp_v4_pre_connect|srcu|"
     r"__rcu_read_(un)?lock"),
    ("hash maps", r"htab|lookup_nulls|pcpu_freelist|jhash"),
    ("socket storage, allocation, RCU frees",
     r"local_storage|sk_storage|selem|bpf_map_kzalloc|bpf_map_get_memcg|__kmalloc|memcg|obj_stock|"
     r"obj_cgroup|kvfree|call_rcu|rcu_cblist|rcu_do_batch|rcu_core|rcu_work|kfree|slab|kmem_cache"),
    ("socket cookie", r"cookie"),
]


def group(sym):
    for name, rx in GROUPS:
        if re.search(rx, sym):
            return name
    return "everything else (the kernel's TCP, noise)"


def leaf_histograms(data, comm):
    """Per pid of `comm`: Counter of leaf symbols, pids in order of their first sample."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    hist, order, cur, leaf = collections.defaultdict(collections.Counter), [], None, False
    for ln in out.split("\n"):
        if not ln.strip():
            cur = None
            continue
        if not ln.startswith("\t"):  # a sample's header: comm pid
            parts = ln.split()
            cur = parts[1] if parts and parts[0] == comm else None
            if cur and cur not in hist:
                order.append(cur)
            leaf = True
            continue
        if cur and leaf:  # the first frame of the call chain: where the CPU was
            f = ln.strip().split(None, 1)
            sym = f[1] if len(f) > 1 else "?"
            if sym.startswith("[unknown]") and f[0].startswith("ffffffffc"):
                sym = "bpf_jit [unknown]"  # JIT-ed BPF code perf did not name (a program or trampoline)
            hist[cur][sym] += 1
            leaf = False
    return hist, order


def main():
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("perf_data")
    a.add_argument("bench_json")
    a.add_argument("--freq", type=float, default=5000)
    a.add_argument("--variant", default="1B")
    a.add_argument("--comm", default="mrload")
    a.add_argument("--top", type=int, default=10)
    o = a.parse_args()
    run = json.load(open(o.bench_json))
    samples = run["samples"]
    hist, order = leaf_histograms(o.perf_data, o.comm)
    # Each measurement's first client (the one on CPU 0) has most of the samples of its pid; a second
    # client runs on the other CPU and leaves few or none here.
    big = [p for p in order if sum(hist[p].values()) > o.freq * 0.5]
    if len(big) != len(samples):
        raise SystemExit(f"{len(big)} client pids with samples on CPU 0, {len(samples)} measurements in the run: "
                         "use --retries 0 and start perf before the bench")
    per = {}  # mode: (leaf samples, connections), summed over its rounds
    for pid, s in zip(big, samples):
        if s["variant"] == o.variant:
            h, conns = per.get(s["mode"], (collections.Counter(), 0))
            per[s["mode"]] = (h + hist[pid], conns + s["counters"]["conns"])
    us = lambda h, sym, conns: h[sym] / o.freq / conns * 1e6
    base, bconns = per["direct"]
    print(f"{'mode':28} µs of CPU 0 per connection")
    for mode, (h, conns) in per.items():
        print(f"{mode:28} {sum(h.values()) / o.freq / conns * 1e6:6.2f}")
    for mode, (h, conns) in per.items():
        if mode == "direct":
            continue
        diffs = {sym: us(h, sym, conns) - us(base, sym, bconns) for sym in set(h) | set(base)}
        by = collections.Counter()
        for sym, d in diffs.items():
            by[group(sym)] += d
        print(f"\n{mode} − direct: {sum(diffs.values()):+.2f} µs per connection")
        for name, _ in GROUPS + [("everything else (the kernel's TCP, noise)", "")]:
            print(f"  {name:42} {by[name]:+.2f}")
        top = sorted(diffs.items(), key=lambda kv: -kv[1])[: o.top]
        print("  most:", ", ".join(f"{sym} {d:+.2f}" for sym, d in top))


if __name__ == "__main__":
    main()
