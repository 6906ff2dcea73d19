"""Worker processes for the CPU-bound stages (mapping, signing), so they run beside the listener, not in it.

Each pool's processes are direct children of the gateway (spawn: the gateway has threads, so plain fork is
unsafe), named after their stage for `top` and `ps` (hbgw-map, hbgw-sign), yield the CPU to the gateway
process (nice +5: a sender waiting for its acknowledgement comes before work that is already safe on disk),
and exit on their own when the gateway is gone, kill -9 included, instead of lingering as orphans; they exit
without the interpreter's final collections, which cost a stopping gateway 0.3 s per process.
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import gc
import os
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from typing import Any

WORKER_NICENESS = 5
PR_SET_NAME = 15  # prctl(2): the name /proc/PID/comm, top and ps show


def _name_process(name: str) -> None:
    """Show the stage's name instead of `python` where operators look (Linux; elsewhere nothing happens)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return
    try:
        ctypes.CDLL(library).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def start_worker(parent_pid: int, name: str, setup: Callable[..., None] | None = None,
                 setup_args: tuple[Any, ...] = ()) -> None:
    """Worker start-up: name, priority, leave with the parent, then the stage's own set-up."""
    _name_process(name)
    try:
        os.nice(WORKER_NICENESS)
    except OSError:  # a sandbox that forbids setpriority: work at the gateway's priority rather than not at all
        pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    # At exit the interpreter's last garbage collections walk every object of every imported module (0.3 s
    # per process); a worker holds nothing that needs them, and a gateway stopping or restarting waits for it.
    atexit.register(gc.freeze)
    if setup is not None:
        setup(*setup_args)


def worker_pool(processes: int, name: str, setup: Callable[..., None] | None = None,
                setup_args: tuple[Any, ...] = ()) -> Executor:
    """`processes` worker processes named `name`, each running setup(*setup_args) once at start;
    0 processes: one thread of the gateway process instead (setup is then the caller's business)."""
    if processes <= 0:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    return ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn"), initializer=start_worker,
                               initargs=(os.getpid(), name, setup, setup_args))


def portable(exc: BaseException, name: str = "") -> BaseException:
    """An exception a worker hands back as its result: itself when it crosses to the gateway process intact
    (pickled and read back), else a RuntimeError saying `name` (by default its type's name): one that cannot
    be read back would break the whole pool."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - whatever pickle raises, the name is what the stage records
        return RuntimeError(name or type(exc).__name__)
    return exc
