/**
 * The seccomp filter every sandbox runs under (bubblewrap loads it with `--seccomp FD`, after no_new_privs):
 * a classic BPF program that refuses, with EPERM, the few system calls no interpreter or shell tool needs
 * and that have been the kernel's most exploited attack surface — io_uring, userfaultfd, bpf,
 * perf_event_open, the key ring, kexec — as Docker's default profile and dify-sandbox do. System calls of
 * another ABI (32-bit x86, x32) are refused with ENOSYS: nothing in a sandbox is built for them. Everything
 * else is allowed; the namespaces, the dropped capabilities and the read-only mounts do the rest.
 */

const AUDIT_ARCH = { x64: 0xc000003e, arm64: 0xc00000b7 } as const;

/** Refused system calls, by number on each architecture (asm/unistd.h). */
const DENIED: Record<keyof typeof AUDIT_ARCH, Record<string, number>> = {
  x64: {
    io_uring_setup: 425,
    io_uring_enter: 426,
    io_uring_register: 427,
    userfaultfd: 323,
    bpf: 321,
    perf_event_open: 298,
    keyctl: 250,
    add_key: 248,
    request_key: 249,
    kexec_load: 246,
    kexec_file_load: 320,
  },
  arm64: {
    io_uring_setup: 425,
    io_uring_enter: 426,
    io_uring_register: 427,
    userfaultfd: 282,
    bpf: 280,
    perf_event_open: 241,
    keyctl: 219,
    add_key: 217,
    request_key: 218,
    kexec_load: 104,
    kexec_file_load: 294,
  },
};

/** The names of the refused system calls (for documentation and /health). */
export const DENIED_SYSCALLS = Object.keys(DENIED.x64);

const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const RET_K = 0x06;
const RET_ALLOW = 0x7fff0000;
const RET_ERRNO = 0x00050000;
const EPERM = 1;
const ENOSYS = 38;
/** x32 system calls carry this bit in their number. */
const X32_BIT = 0x40000000;

interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/**
 * The filter for this machine's architecture as the bytes of `struct sock_filter[]`, or null on an
 * architecture without a table here (the sandbox then runs without the filter, and the start-up log says so).
 */
export function seccompProgram(arch: string = process.arch): Buffer | null {
  if (arch !== 'x64' && arch !== 'arm64') return null;
  const denied = Object.values(DENIED[arch]);
  // Layout: arch check, number load, [x32 check], one test per denied call, then ALLOW, EPERM, ENOSYS.
  const prologue = arch === 'x64' ? 4 : 3;
  const allowAt = prologue + denied.length;
  const epermAt = allowAt + 1;
  const enosysAt = allowAt + 2;
  const jump = (from: number, to: number) => to - from - 1;
  const insns: Insn[] = [
    { code: LD_W_ABS, jt: 0, jf: 0, k: 4 }, // seccomp_data.arch
    { code: JEQ_K, jt: 0, jf: jump(1, enosysAt), k: AUDIT_ARCH[arch] },
    { code: LD_W_ABS, jt: 0, jf: 0, k: 0 }, // seccomp_data.nr
  ];
  if (arch === 'x64') insns.push({ code: JGE_K, jt: jump(3, enosysAt), jf: 0, k: X32_BIT });
  for (const nr of denied) insns.push({ code: JEQ_K, jt: jump(insns.length, epermAt), jf: 0, k: nr });
  insns.push({ code: RET_K, jt: 0, jf: 0, k: RET_ALLOW });
  insns.push({ code: RET_K, jt: 0, jf: 0, k: RET_ERRNO | EPERM });
  insns.push({ code: RET_K, jt: 0, jf: 0, k: RET_ERRNO | ENOSYS });
  const out = Buffer.alloc(insns.length * 8);
  insns.forEach((insn, i) => {
    out.writeUInt16LE(insn.code, i * 8);
    out.writeUInt8(insn.jt, i * 8 + 2);
    out.writeUInt8(insn.jf, i * 8 + 3);
    out.writeUInt32LE(insn.k >>> 0, i * 8 + 4);
  });
  return out;
}
