"""A seccomp filter for the sandbox, as the raw classic-BPF program bubblewrap loads.

Namespaces already keep the sandbox away from the network, the host's files and
processes; the filter takes away the system calls that reach into the kernel's
own machinery from inside them: tracing (`ptrace`, `process_vm_*`), mounting and
namespace changes (`mount`, `unshare`, `setns`, the new mount API), keyrings,
`bpf`, `perf_event_open`, `userfaultfd`, module and kexec loading. Each of them
fails with EPERM. A foreign architecture or the x32 ABI kills the process.

The program is a few lines of BPF built here rather than a dependency:
libseccomp's Python binding ships only with Debian's system Python. The table
covers x86_64; elsewhere `program()` returns None and the sandbox runs with its
namespaces, its dropped capabilities and `--disable-userns` only.
"""

from __future__ import annotations

import errno
import platform
import struct

# struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}
_INSN = struct.Struct("=HBBI")
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_ARCH_OFFSET = 4  # seccomp_data.arch
_NR_OFFSET = 0  # seccomp_data.nr
_X32_BIT = 0x40000000

AUDIT_ARCH_X86_64 = 0xC000003E

DENIED_X86_64: dict[str, int] = {
    "ptrace": 101, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442,
}  # fmt: skip


def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine's architecture, or None where there is no table."""
    if (machine or platform.machine()) != "x86_64":
        return None
    return build(AUDIT_ARCH_X86_64, sorted(DENIED_X86_64.values()))


def build(arch: int, denied: list[int]) -> bytes:
    """check arch; refuse x32; each denied number -> EPERM; everything else allowed."""
    allow = 5 + len(denied)  # index of RET ALLOW; EPERM and KILL follow it
    insns = [
        (_LD_W_ABS, 0, 0, _ARCH_OFFSET),
        (_JEQ_K, 1, 0, arch),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, _NR_OFFSET),
        (_JGE_K, allow + 2 - 5, 0, _X32_BIT),
    ]
    for index, number in enumerate(denied, start=5):
        insns.append((_JEQ_K, allow + 1 - (index + 1), 0, number))
    insns += [(_RET_K, 0, 0, _RET_ALLOW), (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
              (_RET_K, 0, 0, _RET_KILL_PROCESS)]
    return b"".join(_INSN.pack(*insn) for insn in insns)
