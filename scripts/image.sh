#!/usr/bin/env bash
# image.sh — `make image`: builds the agent's container image (Dockerfile) with podman on this machine,
# from nothing but Debian's apt mirror and the host's Node.js: installs podman/runc/debootstrap if
# missing, makes the debian:12 base with debootstrap and the Node runtime image from the host's node
# when they are not cached yet, then builds. Machine quirks it works around: docs/image.md.
#   IMAGE=localhost/meshredir:dev   the tag to build (default below)
#   MESHREDIR_REBUILD_BASE=1        make the base and Node images again even if cached
#   scripts/image.sh clean          remove every image this script made (localhost/meshredir*, build cache)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "image: run as root (podman's rootful storage, debootstrap)" >&2; exit 1; }

IMAGE=${IMAGE:-localhost/meshredir:latest}
SUITE=bookworm # Debian 12: what the Dockerfile's `FROM debian:12` names
# This machine: crun refuses the hybrid cgroup layout (runc works), no systemd (cgroupfs, file events),
# podman's default ulimits exceed the VM's hard limits.
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
say() { printf 'image: [%ss] %s\n' "$SECONDS" "$*" >&2; }
# Images of ours no tag points to any more (earlier builds' stages): every image made here carries a
# label of the base or Node image it was made from.
dangling_ours() {
  for l in io.meshredir.base.recipe io.meshredir.node.version; do
    "${PODMAN[@]}" images -q --filter dangling=true --filter "label=$l"
  done | sort -u
}

if [ "${1:-}" = clean ]; then
  command -v podman >/dev/null || exit 0
  "${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}}' | grep -E '^localhost/meshredir(-[a-z]+)?:' |
    xargs -r "${PODMAN[@]}" rmi -f >/dev/null
  dangling_ours | xargs -r "${PODMAN[@]}" rmi -f >/dev/null 2>&1 || true
  say "removed localhost/meshredir* and their build cache"
  exit 0
fi

# 1. Tools (also in scripts/deps.sh; here too so that `make image` alone works on a fresh machine).
missing=()
for p in podman runc debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The debian:12 base, from the Debian mirror this machine's apt uses (no container registry here).
#    Cached as localhost/meshredir-base:<key>; the key covers everything that goes into it, so a
#    different mirror, suite or this recipe makes a new one. Packages inside get their updates at every
#    image build anyway (the Dockerfile runs apt-get upgrade against bookworm-updates and -security).
mirror_of() { # $1: suite → the repository URI apt has lists for
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | awk -v s="$1" '$2 == s { print $1; exit }'
}
mirror=$(mirror_of "$SUITE")
if [ -z "$mirror" ]; then
  apt-get update -qq
  mirror=$(mirror_of "$SUITE")
fi
security=$(mirror_of "$SUITE-security")
mirror=${mirror:-http://deb.debian.org/debian/}
security=${security:-http://deb.debian.org/debian-security/}
recipe="debootstrap --variant=minbase $SUITE $mirror; security $security; v1"
base_key=$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
BASE=localhost/meshredir-base:$SUITE-$base_key
if [ "${MESHREDIR_REBUILD_BASE:-}" = 1 ] || ! "${PODMAN[@]}" image exists "$BASE"; then
  say "making $BASE with debootstrap from $mirror (about 1.5 min)"
  root=$(mktemp -d /var/tmp/meshredir-base-XXXXXX)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2
    rm -f "$root.log"
    exit 1
  }
  rm -f "$root.log" "$root/etc/apt/sources.list"
  # The same sources as the official image: the release, its updates and security.
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar --numeric-owner -C "$root" -c . | "${PODMAN[@]}" import \
    --change 'CMD ["/bin/bash"]' --change "LABEL io.meshredir.base.recipe=\"$recipe\"" - "$BASE" >/dev/null
  rm -rf "$root"
  trap - EXIT
  # Older bases of ours are no longer referenced.
  for old in $("${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/meshredir-base:' | grep -vx "$BASE"); do
    "${PODMAN[@]}" rmi "$old" >/dev/null 2>&1 || true
  done
fi

# 3. Node.js ≥ 20 (Debian 12's own nodejs is 18, which package.json's engines refuses): the host's
#    runtime, laid out as in the official node images (/usr/local/{bin,include,lib/node_modules/npm}),
#    so the Dockerfile takes NODE_IMAGE=node:20-bookworm-slim just as well where a registry is reachable.
node_bin=$(node -p process.execPath)
node_ver=$(node -p process.versions.node)
[ "${node_ver%%.*}" -ge 20 ] || { echo "image: node $node_ver on this host; need >= 20" >&2; exit 1; }
prefix=$(dirname "$(dirname "$node_bin")")
[ -f "$prefix/include/node/common.gypi" ] || { echo "image: no Node headers at $prefix/include/node (node-gyp needs them)" >&2; exit 1; }
[ -d "$prefix/lib/node_modules/npm" ] || { echo "image: no npm at $prefix/lib/node_modules/npm" >&2; exit 1; }
node_key=$( (sha256sum "$node_bin"; cat "$prefix/lib/node_modules/npm/package.json") | sha256sum | cut -c1-12)
NODE=localhost/meshredir-node:$node_ver-$node_key
if [ "${MESHREDIR_REBUILD_BASE:-}" = 1 ] || ! "${PODMAN[@]}" image exists "$NODE"; then
  say "making $NODE from $node_bin"
  stage=$(mktemp -d /var/tmp/meshredir-node-XXXXXX)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/usr/local/bin" "$stage/usr/local/include" "$stage/usr/local/lib/node_modules"
  cp -p "$node_bin" "$stage/usr/local/bin/node"
  cp -a "$prefix/include/node" "$stage/usr/local/include/"
  cp -a "$prefix/lib/node_modules/npm" "$stage/usr/local/lib/node_modules/"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/usr/local/bin/npx"
  tar --numeric-owner --owner=0 --group=0 -C "$stage" -c . | "${PODMAN[@]}" import \
    --change "LABEL io.meshredir.node.version=$node_ver io.meshredir.node.from=$node_bin" - "$NODE" >/dev/null
  rm -rf "$stage"
  trap - EXIT
  for old in $("${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/meshredir-node:' | grep -vx "$NODE"); do
    "${PODMAN[@]}" rmi "$old" >/dev/null 2>&1 || true
  done
fi

# 4. The image. Host network for the build steps (apt, npm) so podman makes no bridge or NAT rules on
#    the host; layers are cached by podman (apt and npm steps redo only when their inputs change).
# The CA bundle the host's npm trusts (this machine reaches the npm registry through a TLS-inspecting
# proxy whose CA only the host's bundle has), handed to the npm step as a build secret.
ca=$(npm config get cafile 2>/dev/null || true)
[ -s "$ca" ] || ca=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
secret=()
[ -s "$ca" ] && secret=(--secret "id=npm-ca,src=$ca")
say "building $IMAGE"
start=$(date +%s)
old_id=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
"${PODMAN[@]}" build "${ULIMITS[@]}" --network host --pull=never \
  --build-arg "BASE_IMAGE=$BASE" --build-arg "NODE_IMAGE=$NODE" "${secret[@]}" \
  -t "$IMAGE" -f Dockerfile . >&2
# The build stage under a name of ours, so that its cached layers are not anonymous (`clean` removes it).
"${PODMAN[@]}" build "${ULIMITS[@]}" --network host --pull=never --target build \
  --build-arg "BASE_IMAGE=$BASE" --build-arg "NODE_IMAGE=$NODE" "${secret[@]}" \
  -t localhost/meshredir-build:latest -f Dockerfile . >/dev/null
# The previous build of this tag, now untagged (its layers stay as the build cache).
new_id=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE")
[ -n "$old_id" ] && [ "$old_id" != "$new_id" ] && "${PODMAN[@]}" rmi "$old_id" >/dev/null 2>&1 || true
dangling_ours | xargs -r "${PODMAN[@]}" rmi >/dev/null 2>&1 || true
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
say "$IMAGE: $((size / 1024 / 1024)) MiB, built in $(($(date +%s) - start)) s"
