# Makefile — deps, build (BPF objects + TypeScript), tests, demo. Objects go to build/, never bpf/.
.DELETE_ON_ERROR:
.PHONY: all deps build bpf ts test test-unit test-kernel demo bench image clean

BUILD     := build
BPF_SRCS  := $(wildcard bpf/*.bpf.c)
BPF_OBJS  := $(patsubst bpf/%.bpf.c,$(BUILD)/%.bpf.o,$(BPF_SRCS))
CLANG     ?= clang
BPFTOOL   ?= bpftool
# The BTF vmlinux.h is generated from: a build input (UAPI constants, local types of CO-RE relocations),
# not a promise about the kernel the object will run on (libbpf relocates against that kernel's BTF).
VMLINUX_BTF ?= /sys/kernel/btf/vmlinux
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror -I$(BUILD) -Ibpf

all: build

deps:
	@scripts/deps.sh

build: bpf ts

bpf: $(BUILD)/meshredir.bpf.o $(BUILD)/origdst-proxy $(BUILD)/mrload $(BUILD)/mrdns $(BUILD)/xfer $(BUILD)/elemreuse.bpf.o $(BUILD)/meshredir-prof.bpf.o

$(BUILD)/vmlinux.h: $(VMLINUX_BTF)
	@mkdir -p $(BUILD)
	$(BPFTOOL) btf dump file $< format c > $@

$(BUILD)/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) $(BUILD)/vmlinux.h
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# The sk_msg program's fully ordered atomics on 32-bit fields (mr_fastpath.h: mr_add_mb) are BPF_FETCH,
# which clang emits for 32-bit operands only with -mcpu=v3 (ALU32, JMP32: Linux 5.1; the fetch itself
# 5.12; the fast path needs 6.10). The other programs keep the default code generation.
$(BUILD)/skmsg.bpf.o $(BUILD)/prof/skmsg.bpf.o: BPF_CFLAGS += -mcpu=v3

# One object with every hook: the maps, declared weak in mr_common.h, end up once.
$(BUILD)/meshredir.bpf.o: $(BPF_OBJS)
	$(BPFTOOL) gen object $@ $^

# A test program on mr_orig's map type (see test/tools/elemreuse.bpf.c), run with BPF_PROG_TEST_RUN.
$(BUILD)/elemreuse.bpf.o: test/tools/elemreuse.bpf.c bpf/mr_abi.h bpf/mr_common.h $(BUILD)/vmlinux.h
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# The same programs counting their calls per callback and cgroup (bpf/mr_prof.h), for `bench --only
# hooks`; never loaded by default.
PROF_OBJS := $(patsubst bpf/%.bpf.c,$(BUILD)/prof/%.bpf.o,$(BPF_SRCS))
$(BUILD)/prof/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) $(BUILD)/vmlinux.h
	@mkdir -p $(BUILD)/prof
	$(CLANG) $(BPF_CFLAGS) -DMR_HOOKPROF -c $< -o $@
$(BUILD)/meshredir-prof.bpf.o: $(PROF_OBJS)
	$(BPFTOOL) gen object $@ $^

# The small test/benchmark proxy that asks SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST itself.
$(BUILD)/origdst-proxy: test/tools/origdst-proxy.c
	@mkdir -p $(BUILD)
	$(CC) -O2 -Wall -Werror -o $@ $<

# The fast-path tests' checksummed transfer client.
$(BUILD)/xfer: test/tools/xfer.c
	@mkdir -p $(BUILD)
	$(CC) -O2 -Wall -Werror -pthread -o $@ $<

# The benchmark's load generator (TCP_CRR and RR with latency percentiles).
$(BUILD)/mrload: bench/mrload.c
	@mkdir -p $(BUILD)
	$(CC) -O2 -Wall -Werror -o $@ $<

# The DNS bench's load generator (UDP queries, one socket each, with latency percentiles).
$(BUILD)/mrdns: bench/mrdns.c
	@mkdir -p $(BUILD)
	$(CC) -O2 -Wall -Werror -o $@ $<

# tsc's dist/, then the CLI bundled over dist/cli/main.js (scripts/bundle.mjs: a fast start).
ts:
	npx tsc -p tsconfig.json
	node scripts/bundle.mjs

test: build
	scripts/test.sh

# The unit suite reads the built object's BTF (opened, never loaded: no root needed).
test-unit: bpf
	npx vitest run --project unit

test-kernel: build
	npx vitest run --project kernel

demo: build
	scripts/demo.sh

bench: build
	node dist/cli/main.js bench $(BENCH_FLAGS)

# The agent's container image, built with podman (scripts/image.sh; docs/image.md).
image:
	scripts/image.sh

clean:
	rm -rf $(BUILD) dist
