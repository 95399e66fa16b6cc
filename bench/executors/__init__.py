"""Executors: who runs a grid's groups (DESIGN.md, "Work units and scale").

- `local.py`: on this host, in the `bench run` process (`--workers 1`, the default) or in N worker
  processes, one group each at a time, each with its own GPU or share of the CPU cores;
- `slurm.py`: one SLURM job array over the pending groups, through submitit.

Each runs a group as its job file (`bench/groups.py`) through `bench/worker.py`, under the
checkpoint's lease (`bench/lease.py`), so executors may share a results folder; records are the only
state, so any executor resumes any grid.
"""
