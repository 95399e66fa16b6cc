"""A lease on a checkpoint: whoever holds it is the one process that trains (and attacks) that model.

The lease is a lock file next to the checkpoint, `<checkpoint>.lease`, holding who took it (JSON: host,
PID and the PID's start time, SLURM job, group, since when). It works the same for every executor
(in-process, local worker processes, SLURM tasks, two `bench run` commands on one results folder),
because all of them only share the results folder.

- **Taken atomically**: the holder's JSON is written to a temporary file, then hard-linked to the lease
  name; `link` fails when the name exists, on local file systems and on NFS alike.
- **Released on exit**: `release()` (or leaving the `with` block, also on an exception or Ctrl-C)
  removes the file, if it is still this holder's.
- **Kept alive**: a daemon thread touches the file every `heartbeat_s` seconds (default 30).
- **Stale leases are broken**: a lease is stale when its holder runs on this host and its process is
  gone (no such PID, a zombie, or a new process that reuses the PID: another start time); when its
  holder is an earlier run of the SLURM job this process runs in (a requeued job); or when its
  heartbeat is older than `stale_after_s` (default 600 s: a holder on another host that died or
  hangs). Breaking one happens under a short second lock (`.lease.break`), so two processes that find
  the same stale lease never remove a fresh one.
- **Re-entrant within a process**: acquiring a lease this process already holds (a script that
  prepares the same group twice) returns a handle that does not release it.

Host identity is the host name: processes in PID namespaces that share a host name and a results
folder (containers) would look dead to each other, and are not supported.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from robustad.bench.results.provenance import current_slurm_job

LEASE_SUFFIX = ".lease"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
BREAK_LOCK_STALE_S = 60.0  # a breaker holds the break lock for milliseconds; one older than this died


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lease (the lease file's content) and when it last beat."""

    token: str
    host: str
    pid: int
    pid_start: int | None  # the process's start time in clock ticks since boot (Linux), against PID reuse
    since: str  # ISO time, UTC
    group: str | None = None  # the group id, when a worker holds it for a whole group
    slurm_job: str | None = None  # "123_4" or "123" inside a SLURM job
    heartbeat: float | None = None  # the lease file's modification time (not stored in the file)

    def describe(self) -> str:
        where = f"PID {self.pid} on {self.host}"
        if self.slurm_job:
            where += f" (SLURM job {self.slurm_job})"
        return f"{where} since {self.since}"

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("heartbeat")
        return data


def lease_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + LEASE_SUFFIX)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); None where unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(fields[19]) if len(fields) > 19 else None


def process_alive(pid: int, start: int | None) -> bool:
    """Whether PID is a live process (not a zombie) that started at `start` (when both are known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): existence is all we can tell
    fields = text[text.rfind(")") + 2:].split()
    if fields and fields[0] in ("Z", "X"):
        return False
    return start is None or len(fields) <= 19 or int(fields[19]) == start


def this_process() -> Holder:
    return Holder(token=secrets.token_hex(8), host=socket.gethostname(), pid=os.getpid(),
                  pid_start=process_start_time(os.getpid()), since=datetime.now(timezone.utc).isoformat(),
                  slurm_job=current_slurm_job())


def read_holder(path: str | Path) -> Holder | None:
    """The holder of the lease at `path`, or None when there is no (readable) lease."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        heartbeat = path.stat().st_mtime
        fields = {f.name for f in dataclasses.fields(Holder)}
        return Holder(**{k: v for k, v in data.items() if k in fields}, heartbeat=heartbeat)
    except (OSError, ValueError, TypeError):
        return None


def stale_reason(holder: Holder, *, stale_after_s: float = STALE_AFTER_S, now: float | None = None) -> str | None:
    """Why the lease of `holder` is stale, or None while its holder may still be working."""
    me = this_process()
    if holder.host == me.host:
        if not process_alive(holder.pid, holder.pid_start):
            return f"its process (PID {holder.pid} on {holder.host}) is gone"
        return None  # alive on this host: its heartbeat does not matter (it may be busy in C code)
    if holder.slurm_job and holder.slurm_job == me.slurm_job:
        return f"it is an earlier run of this SLURM job ({holder.slurm_job}), which was requeued"
    age = (time.time() if now is None else now) - (holder.heartbeat or 0.0)
    if age > stale_after_s:
        return f"its heartbeat is {age:.0f} s old (more than {stale_after_s:.0f} s)"
    return None


def is_mine(holder: Holder | None) -> bool:
    me = this_process()
    return holder is not None and (holder.host, holder.pid, holder.pid_start) == (me.host, me.pid, me.pid_start)


class Lease:
    """The lease of one checkpoint; a context manager (`with Lease(path).held(): ...`).

    `acquire(wait=False)` returns False when a live holder has it (`self.holder` says who);
    `acquire(wait=True)` polls every `poll_s` seconds until it gets it (breaking it once stale).
    """

    def __init__(self, checkpoint: str | Path, *, group: str | None = None, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S, poll_s: float = 1.0, log: Callable[[str], None] | None = None):
        self.path = lease_path(checkpoint)
        self.group = group
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.poll_s = poll_s
        self.log = log or (lambda message: None)
        self.holder: Holder | None = None  # the live holder that stopped the last acquire, if any
        self.owned = False  # this handle took the file (and removes it on release)
        self.held_here = False  # this process holds the lease (taken by this handle or an outer one)
        self._mine: Holder | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- taking and giving back -------------------------------------------------------------------
    def acquire(self, wait: bool = False, timeout_s: float | None = None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        announced = None
        while True:
            if self._try_once():
                return True
            if not wait or (deadline is not None and time.monotonic() > deadline):
                return False
            if self.holder is not None and self.holder.token != announced:
                self.log(f"waiting for {self.path.name}: held by {self.holder.describe()}")
                announced = self.holder.token
            time.sleep(self.poll_s)

    def release(self) -> None:
        if not self.owned:
            self.held_here = False
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        current = read_holder(self.path)
        if current is not None and current.token == self._mine.token:
            _unlink(self.path)
        else:
            self.log(f"lease {self.path} was no longer ours at release (broken as stale by another process)")
        self.owned = self.held_here = False

    def held(self, wait: bool = True, timeout_s: float | None = None) -> "Lease":
        """`with lease.held():` acquires (waiting by default) and releases on exit."""
        if not self.acquire(wait=wait, timeout_s=timeout_s):
            raise LeaseHeldError(self.path, self.holder)
        return self

    def __enter__(self) -> "Lease":
        if not self.held_here:
            self.held(wait=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # -- internals --------------------------------------------------------------------------------
    def _try_once(self) -> bool:
        if self.owned:
            return True
        current = read_holder(self.path)
        if is_mine(current):
            self.held_here, self.owned, self.holder = True, False, None
            return True
        if current is not None:
            reason = stale_reason(current, stale_after_s=self.stale_after_s)
            if reason is None:
                self.holder = current
                return False
            if not self._break(current, reason):
                return False
        elif self.path.exists():
            # A lease whose file is there but unreadable: being written by link (never: link is atomic),
            # or damaged. Treat a damaged one older than the stale limit as stale.
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                age = 0.0
            if age > self.stale_after_s:
                _unlink(self.path)
            return False
        mine = dataclasses.replace(this_process(), group=self.group)
        if not _create_exclusive(self.path, json.dumps(mine.to_json(), indent=1) + "\n"):
            self.holder = read_holder(self.path)
            return False
        self._mine, self.owned, self.held_here, self.holder = mine, True, True, None
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lease-heartbeat {self.path.name}", daemon=True)
        self._beat.start()
        return True

    def _break(self, stale: Holder, reason: str) -> bool:
        """Removes the stale lease of `stale` if it is still the one there; True when it is gone."""
        guard = self.path.with_name(self.path.name + ".break")
        if not _create_exclusive(guard, f"{os.getpid()}\n"):
            try:
                if time.time() - guard.stat().st_mtime > BREAK_LOCK_STALE_S:
                    _unlink(guard)
            except OSError:
                pass
            return False
        try:
            current = read_holder(self.path)
            if current is None or current.token != stale.token:
                return current is None
            self.log(f"breaking stale lease {self.path} of {stale.describe()}: {reason}")
            _unlink(self.path)
            return True
        finally:
            _unlink(guard)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self.log(f"lease {self.path} disappeared while held")
                return


class LeaseHeldError(RuntimeError):
    def __init__(self, path: Path, holder: Holder | None):
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by {holder.describe() if holder else 'another process'}")


def live_leases(results: str | Path, stale_after_s: float = STALE_AFTER_S) -> dict[Path, Holder]:
    """Every lease under `<results>/checkpoints` whose holder may still be working, by lease path."""
    found = {}
    for path in (Path(results) / "checkpoints").rglob(f"*{LEASE_SUFFIX}"):
        holder = read_holder(path)
        if holder is not None and stale_reason(holder, stale_after_s=stale_after_s) is None:
            found[path] = holder
    return found


def _create_exclusive(path: Path, text: str) -> bool:
    """Creates `path` with `text` unless it exists (atomic: write a temporary file, then link it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the mode open() gives: a shared results folder stays readable
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        _unlink(tmp)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
