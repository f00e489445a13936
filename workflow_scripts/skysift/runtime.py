"""
Plumbing shared by the thin `script:` entry points of the Snakemake rules.
"""

from __future__ import annotations

import contextlib
import logging
import sys

from .tileio import TileError

__all__ = ["rule_logging"]


@contextlib.contextmanager
def rule_logging(log_path, threads=1):
    """
    Set up a rule's job: log to its log file, use no more threads than it was given.

    stderr and `logging` go to the rule's log file. BLAS/OpenMP pools are limited to the
    job's ``threads`` (a SLURM job given one core must not run two BLAS threads: on a busy
    node a small matrix product then takes 40 times longer).

    A `TileError` (unusable input: the message names the file and the problem) is written as a
    single ``ERROR`` line and the job exits with status 1, so `snakemake --show-failed-logs`
    shows exactly what is wrong; any other exception keeps its full traceback.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    stream = open(log_path, "w", buffering=1)
    sys.stderr = stream
    logging.basicConfig(level=logging.INFO, stream=stream, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        yield logging.getLogger("skysift")
    except TileError as err:
        stream.write(f"ERROR {err}\n")
        stream.flush()
        raise SystemExit(1) from None
