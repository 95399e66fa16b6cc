"""`python -m robustad.bench.worker JOB_FILE`: the worker's published entry point (`bench/run/worker.py`)."""
import sys

from robustad.bench.run.worker import main

if __name__ == "__main__":
    sys.exit(main())
