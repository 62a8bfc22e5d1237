/* abi.bpf.c — no program: the one definition of mr_abi, a read-only global that no program reads.
 * Its type, struct mr_abi, has a field of each enum of mr_abi.h, which is what brings those enums into
 * meshredir.bpf.o's BTF (clang emits only the types something emitted refers to); the agent checks
 * src/bpf/abi.ts against them at load. libbpf gives it a 32-byte .rodata map at each load, which nothing
 * pins and no program uses, so the kernel frees it when the loader closes the object. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "mr_abi.h"

const struct mr_abi mr_abi SEC(".rodata") = {};
