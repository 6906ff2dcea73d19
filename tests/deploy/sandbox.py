"""Run a program under two of the systemd unit's restrictions, to test them where systemd does not run.

    python sandbox.py SYSCALL,SYSCALL,... PROGRAM [ARGS...]

MemoryDenyWriteExecute=yes becomes the kernel's W^X switch (PR_SET_MDWE, Linux 6.3+), and
SystemCallFilter= becomes a seccomp allow-list of the given system calls, every other call failing with
EPERM as with SystemCallErrorNumber=EPERM. Both survive execve, so PROGRAM and its children run under them.
"""
from __future__ import annotations

import ctypes
import os
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE = 65
MDWE_REFUSE_EXEC_GAIN = 1
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_EPERM = 0x00050000 | 1


def _libseccomp() -> ctypes.CDLL:
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    return lib


def confine(allowed_syscalls: list[str]) -> None:
    """Turn on W^X and the system-call allow-list for this process and what it executes."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(f"sandbox: PR_SET_MDWE failed (errno {ctypes.get_errno()})")
    seccomp = _libseccomp()
    context = seccomp.seccomp_init(SCMP_ACT_EPERM)
    for name in allowed_syscalls:
        number = seccomp.seccomp_syscall_resolve_name(name.encode())
        if number >= 0 and seccomp.seccomp_rule_add(context, SCMP_ACT_ALLOW, number, 0) != 0:
            sys.exit(f"sandbox: cannot allow {name}")
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if seccomp.seccomp_load(context) != 0:
        sys.exit("sandbox: seccomp_load failed")


if __name__ == "__main__":
    confine(sys.argv[1].split(","))
    os.execv(sys.argv[2], sys.argv[2:])
