"""The seccomp program, run by a small classic-BPF interpreter: every syscall's verdict."""

from __future__ import annotations

import errno
import struct

import pytest

from actors.code import seccomp

ALLOW, KILL = 0x7FFF0000, 0x80000000
EPERM = 0x00050000 | errno.EPERM
OTHER_ARCH = 0x40000003  # i386


def run_filter(program: bytes, arch: int, nr: int) -> int:
    """Evaluate the four instructions the filter uses on one `seccomp_data`."""
    insns = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    data = {0: nr, 4: arch}
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc = data[k]
        elif code == 0x06:
            return k
        elif code in (0x15, 0x35):
            taken = acc == k if code == 0x15 else acc >= k
            pc += jt if taken else jf
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


@pytest.fixture(scope="module")
def program() -> bytes:
    built = seccomp.program("x86_64")
    assert built is not None
    return built


@pytest.mark.parametrize(("name", "nr"), sorted(seccomp.DENIED_X86_64.items()))
def test_denied_calls_get_eperm(program: bytes, name: str, nr: int) -> None:
    assert run_filter(program, seccomp.AUDIT_ARCH_X86_64, nr) == EPERM, name


@pytest.mark.parametrize(("name", "nr"), [("read", 0), ("write", 1), ("openat", 257),
                                          ("clone", 56), ("execve", 59), ("exit_group", 231)])
def test_ordinary_calls_are_allowed(program: bytes, name: str, nr: int) -> None:
    assert run_filter(program, seccomp.AUDIT_ARCH_X86_64, nr) == ALLOW, name


def test_other_architectures_and_x32_are_killed(program: bytes) -> None:
    assert run_filter(program, OTHER_ARCH, 0) == KILL
    assert run_filter(program, seccomp.AUDIT_ARCH_X86_64, 0x40000000 + 1) == KILL


def test_no_table_no_filter() -> None:
    assert seccomp.program("riscv64") is None
