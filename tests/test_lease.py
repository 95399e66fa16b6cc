"""The checkpoint lease (bench/results/lease.py): exclusive across processes, released on exit, stale leases of
dead holders broken exactly once, re-entrant within a process (issue #27)."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from robustad.bench.results.lease import Holder, Lease, LeaseHeldError, lease_path, live_leases, read_holder, stale_reason

REPO = Path(__file__).resolve().parents[1]

HOLD = textwrap.dedent("""
    import sys, time
    from robustad.bench.results.lease import Lease
    lease = Lease(sys.argv[1], group="held-by-child")
    assert lease.acquire(wait=False)
    print("held", flush=True)
    sys.stdin.readline()  # until the test closes stdin (or kills this process)
    lease.release()
""")

RACE = textwrap.dedent("""
    import sys, time
    from robustad.bench.results.lease import Lease
    start_at = float(sys.argv[2])
    time.sleep(max(0.0, start_at - time.time()))
    won = Lease(sys.argv[1]).acquire(wait=False)
    print("won" if won else "lost", flush=True)
    time.sleep(1.0)  # keep it (alive) while the others try
""")


def python(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, text=True, **kw)


def start_holder(checkpoint: Path) -> subprocess.Popen:
    child = python(HOLD, str(checkpoint), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_lease_held_by_another_process_is_refused_then_broken_once_its_holder_is_killed(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "m" / "model.pt"
    child = start_holder(checkpoint)
    try:
        holder = read_holder(lease_path(checkpoint))
        assert holder.pid == child.pid and holder.host == socket.gethostname() and holder.group == "held-by-child"
        lease = Lease(checkpoint)
        assert lease.acquire(wait=False) is False
        assert lease.holder.pid == child.pid
        with pytest.raises(LeaseHeldError, match=f"PID {child.pid}"):
            lease.held(wait=False)
        assert list(live_leases(tmp_path).values())[0].pid == child.pid
    finally:
        child.kill()
        child.wait()
    seen = []
    lease = Lease(checkpoint, log=seen.append)
    assert lease.acquire(wait=False) is True
    assert any("breaking stale lease" in line and "is gone" in line for line in seen)
    assert read_holder(lease_path(checkpoint)).pid == os.getpid()
    lease.release()
    assert not lease_path(checkpoint).exists()
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == []  # no temporary or break files left


def test_a_waiting_acquire_gets_the_lease_when_its_holder_releases_it(tmp_path):
    checkpoint = tmp_path / "model.pt"
    child = start_holder(checkpoint)
    seen = []
    started = time.monotonic()
    release_at = started + 1.5
    lease = Lease(checkpoint, poll_s=0.1, log=seen.append)
    # the holder lets go after 1.5 s (closing its stdin ends its wait)
    import threading
    threading.Timer(release_at - time.monotonic(), child.stdin.close).start()
    with lease.held(wait=True):
        waited = time.monotonic() - started
        assert read_holder(lease_path(checkpoint)).pid == os.getpid()
    child.wait(timeout=10)
    assert 1.0 < waited < 10
    assert any(f"held by PID {child.pid}" in line for line in seen)
    assert not lease_path(checkpoint).exists()


def test_only_one_of_many_racing_processes_takes_a_free_or_a_stale_lease(tmp_path):
    checkpoint = tmp_path / "model.pt"
    for stale in (False, True):
        if stale:  # a lease left by a process that no longer exists
            dead = python("pass")
            dead.wait()
            holder = Holder(token="old", host=socket.gethostname(), pid=dead.pid, pid_start=None, since="2020-01-01")
            lease_path(checkpoint).write_text(json.dumps(holder.to_json()))
        start_at = time.time() + 2.0
        racers = [python(RACE, str(checkpoint), str(start_at), stdout=subprocess.PIPE) for _ in range(6)]
        outcomes = [racer.communicate(timeout=60)[0].strip() for racer in racers]
        assert sorted(outcomes) == ["lost"] * 5 + ["won"], (stale, outcomes)
        assert not lease_path(checkpoint).exists() or read_holder(lease_path(checkpoint)).token != "old"
        lease_path(checkpoint).unlink(missing_ok=True)  # the winner exited without releasing (killed-like)


def test_the_lease_is_reentrant_within_a_process(tmp_path):
    checkpoint = tmp_path / "model.pt"
    outer = Lease(checkpoint, group="g")
    assert outer.acquire(wait=False) and outer.owned
    with Lease(checkpoint) as inner:  # e.g. fit_or_load inside a worker that holds the group's lease
        assert inner.held_here and not inner.owned
    assert read_holder(lease_path(checkpoint)).group == "g"  # the inner release left it alone
    outer.release()
    assert not lease_path(checkpoint).exists()


def test_a_lease_is_released_when_the_block_raises(tmp_path):
    checkpoint = tmp_path / "model.pt"
    with pytest.raises(KeyboardInterrupt):
        with Lease(checkpoint):
            assert lease_path(checkpoint).exists()
            raise KeyboardInterrupt
    assert not lease_path(checkpoint).exists()


def test_heartbeat_and_staleness_of_holders_on_other_hosts(tmp_path, monkeypatch):
    checkpoint = tmp_path / "model.pt"
    lease = Lease(checkpoint, heartbeat_s=0.1)
    assert lease.acquire()
    before = lease_path(checkpoint).stat().st_mtime
    os.utime(lease_path(checkpoint), (before - 100, before - 100))
    time.sleep(0.5)
    assert lease_path(checkpoint).stat().st_mtime > before - 50  # the heartbeat touched it again
    lease.release()

    elsewhere = Holder(token="t", host="another-host", pid=1, pid_start=None, since="2020-01-01")
    now = time.time()
    assert stale_reason(dataclass_with(elsewhere, heartbeat=now - 10), stale_after_s=60, now=now) is None
    reason = stale_reason(dataclass_with(elsewhere, heartbeat=now - 100), stale_after_s=60, now=now)
    assert "heartbeat is 100 s old" in reason
    # a requeued SLURM job finds the lease of its own earlier run: stale whatever its heartbeat
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    requeued = dataclass_with(elsewhere, heartbeat=now, slurm_job="77")
    assert "earlier run of this SLURM job" in stale_reason(requeued, now=now)


def test_a_reused_pid_does_not_keep_a_dead_holders_lease(tmp_path):
    parent = os.getppid()  # alive, but not the process that took the lease: its start time differs
    holder = Holder(token="t", host=socket.gethostname(), pid=parent, pid_start=1, since="2020-01-01")
    assert "is gone" in stale_reason(holder)
    from robustad.bench.results.lease import process_start_time

    alive = Holder(token="t", host=socket.gethostname(), pid=parent, pid_start=process_start_time(parent),
                   since="2020-01-01")
    assert stale_reason(alive) is None


def dataclass_with(holder: Holder, **changes) -> Holder:
    import dataclasses

    return dataclasses.replace(holder, **changes)
