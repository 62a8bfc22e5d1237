#!/usr/bin/env bash
# demo.sh — shows eBPF redirection on this machine: two pods and a node proxy (HAProxy) in network
# namespaces, a policy for one pod, and which connections went through the proxy. Cleans up after
# itself, also on failure or Ctrl-C. Needs root and `make build`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates namespaces, cgroups and attaches eBPF programs)" >&2; exit 1; }

id=$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
root="/meshredir-test-demo-$id"
bpffs="/sys/fs/bpf/meshredir-test-demo-$id"
policies=$(mktemp -d /tmp/meshredir-demo-XXXXXX)
state=$(mktemp -d /tmp/meshredir-demo-state-XXXXXX)   # the demo's own agent state, never the host's /run/meshredir
own=(--bpffs "$bpffs" --state-dir "$state" --iptables-state "$state/iptables.json")
node_ns="mr-demo-$id-node"; a_ns="mr-demo-$id-a"; b_ns="mr-demo-$id-b"; up_ns="mr-demo-$id-up"
pids=()
meshredir() { node dist/cli/main.js "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  [ -e "$bpffs" ] && meshredir cleanup "${own[@]}" >/dev/null
  [ -e "$cg2$root/cgroup.kill" ] && echo 1 > "$cg2$root/cgroup.kill"
  for ns in "$node_ns" "$a_ns" "$b_ns" "$up_ns"; do ip netns del "$ns" 2>/dev/null; done
  sleep 0.2
  find "$cg2$root" -depth -type d -exec rmdir {} \; 2>/dev/null
  rm -rf "$policies" "$state" "/tmp/meshredir-demo-$id.cfg"
  echo; echo "demo: cleaned up (namespaces, cgroups, pins)"
}
trap cleanup EXIT INT TERM

in_pod() { local cg=$1 ns=$2; shift 2; sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg2$cg" ip netns exec "$ns" "$@"; }

say "Topology: a node netns with bridge 10.200.0.1/24, pods A (.11) and B (.12), upstream (.100)"
for ns in "$node_ns" "$a_ns" "$b_ns" "$up_ns"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$node_ns" link add br0 type bridge; ip -n "$node_ns" addr add 10.200.0.1/24 dev br0; ip -n "$node_ns" link set br0 up
n=0
for pair in "$a_ns:10.200.0.11" "$b_ns:10.200.0.12" "$up_ns:10.200.0.100"; do
  ns=${pair%%:*}; addr=${pair#*:}; n=$((n+1))
  ip -n "$node_ns" link add "v$n-$id" type veth peer name eth0 netns "$ns"
  ip -n "$node_ns" link set "v$n-$id" master br0 up
  ip -n "$ns" addr add "$addr/24" dev eth0; ip -n "$ns" link set eth0 up
done
mkdir -p "$cg2$root/pod-a" "$cg2$root/pod-b" "$cg2$root/proxy"

ip netns exec "$up_ns" node test/tools/server.mjs 10.200.0.100 8080 upstream > /dev/null & pids+=($!)
cat > "/tmp/meshredir-demo-$id.cfg" <<CFG
global
  maxconn 1024
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 10.200.0.1:15001
  default_backend be
backend be
  server o 0.0.0.0:0
CFG
# Background processes are started directly (not through a shell function) so $! is their pid.
sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg2$root/proxy" ip netns exec "$node_ns" haproxy -db -f "/tmp/meshredir-demo-$id.cfg" & pids+=($!)
sleep 1

cat > "$policies/pod-a.yaml" <<YAML
apiVersion: meshredir/v1
kind: RedirectPolicy
metadata: { name: pod-a }
spec:
  cgroup: $root/pod-a
  proxy:
    outbound: 10.200.0.1:15001
    bypass: { cgroups: [$root/proxy] }
YAML
say "Policy: pod A's connections go to the node proxy (HAProxy, 'server o 0.0.0.0:0') at 10.200.0.1:15001"
cat "$policies/pod-a.yaml"

say "Starting the agent (programs attach at $root, never the machine's root cgroup)"
node dist/cli/main.js agent --policies "$policies" --cgroup-root "$root" "${own[@]}" --mode ebpf 2> "$policies/agent.log" & pids+=($!)
for _ in $(seq 100); do grep -q redirect-ready "$policies/agent.log" && break; sleep 0.1; done
grep -q redirect-ready "$policies/agent.log" || { cat "$policies/agent.log"; exit 1; }

show() {
  local label=$1 cg=$2 ns=$3
  local r; r=$(in_pod "$cg" "$ns" node test/tools/client.mjs connect 10.200.0.100 8080)
  node -e '
    const r = JSON.parse(process.argv[1]); const [, who] = r.data.split(" ");
    const via = who === "10.200.0.1" ? "THROUGH THE PROXY" : "direct";
    console.log(`${process.argv[2]}: connect(10.200.0.100:8080) → upstream saw ${who} → ${via}; getpeername() says ${r.peer.address}:${r.peer.port}`);
  ' "$r" "$label"
}
say "Pod A (has a policy) and pod B (none) both connect to the upstream 10.200.0.100:8080"
show "pod A" "$root/pod-a" "$a_ns"
show "pod B" "$root/pod-b" "$b_ns"

say "meshredir status"
meshredir status "${own[@]}"
