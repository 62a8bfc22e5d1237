# Dockerfile — minimal image of the agent (packaging gets its own issue). Runs privileged with the
# host's /sys/fs/cgroup and /sys/fs/bpf mounted; the BPF object is built against the build host's BTF.
FROM debian:12
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      nodejs npm clang llvm libbpf-dev bpftool iptables iproute2 make gcc libc6-dev python3 g++ && \
    rm -rf /var/lib/apt/lists/*
WORKDIR /opt/meshredir
COPY . .
RUN npm install --no-audit --no-fund && make build
ENTRYPOINT ["node", "/opt/meshredir/dist/cli/main.js"]
CMD ["agent", "--policies", "/etc/meshredir/policies"]
