# Dockerfile — the node agent's image: a build stage (clang, bpftool, libbpf-dev, node-gyp's toolchain)
# and a runtime stage with Node, libbpf, iptables (nft + legacy) and iproute2, and no compiler.
# Built and run on this machine by `make image` (scripts/image.sh); privileges and mounts: docs/image.md.
#   BASE_IMAGE  Debian 12 (scripts/image.sh: made with debootstrap, as no registry is reachable here)
#   NODE_IMAGE  any image with Node >= 20 under /usr/local (bin/node, include/node, lib/node_modules/npm),
#               as the official node images have it; scripts/image.sh makes one from the host's Node
ARG BASE_IMAGE=debian:12
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS node

FROM ${BASE_IMAGE} AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      clang libbpf-dev bpftool make gcc g++ libc6-dev python3 >/dev/null && \
    rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/ /usr/local/
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock file changes. node-gyp compiles the FFI
# addons against the headers of the Node copied above. A CA bundle for the npm registry may be given as
# the build secret `npm-ca` (a TLS-inspecting egress proxy; never stored in a layer).
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm --mount=type=secret,id=npm-ca \
    if [ -s /run/secrets/npm-ca ]; then export npm_config_cafile=/run/secrets/npm-ca; fi && \
    npm_config_nodedir=/usr/local npm ci --no-audit --no-fund --loglevel=error
COPY Makefile tsconfig.json ./
COPY scripts/bundle.mjs scripts/
COPY bpf/ bpf/
COPY src/ src/
# vmlinux.h comes from the BTF the builder's kernel exposes (VMLINUX_BTF): it only supplies UAPI
# constants and the local types of CO-RE relocations, which libbpf resolves against the target
# kernel's BTF at load, and the agent's probe loads this very object there before choosing eBPF.
ARG VMLINUX_BTF=/sys/kernel/btf/vmlinux
RUN make build/meshredir.bpf.o ts VMLINUX_BTF="$VMLINUX_BTF" && \
    { uname -r; sha256sum "$VMLINUX_BTF"; } > build/vmlinux.h.from && \
    npm prune --omit=dev --no-audit --no-fund --loglevel=error && \
    rm -rf node_modules/@2060.io/*/build/Release/obj.target node_modules/@2060.io/*/build/Release/.deps \
      node_modules/@2060.io/ffi-napi/deps && \
    find node_modules -type f \( -name '*.ts' -o -name '*.mts' -o -name '*.cts' -o -name '*.map' \) -delete

FROM ${BASE_IMAGE}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq >/dev/null && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libbpf1 libstdc++6 iptables iproute2 >/dev/null && \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY --from=node /usr/local/bin/node /usr/local/bin/node
WORKDIR /opt/meshredir
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules/ node_modules/
COPY --from=build /src/dist/ dist/
COPY --from=build /src/build/meshredir.bpf.o /src/build/vmlinux.h.from build/
# Tells the agent it runs in a container: it then refuses to mount a bpffs of its own (pins in it would
# die with the container) and asks for the host's instead.
ENV container=oci
ENTRYPOINT ["node", "/opt/meshredir/dist/cli/main.js"]
CMD ["agent", "--policies", "/etc/meshredir/policies"]
