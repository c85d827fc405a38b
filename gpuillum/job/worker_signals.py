"""Dask worker preload: a worker process ignores SIGINT and SIGTERM; its client stops it.

Ctrl-C reaches the terminal's whole process group and SLURM's scancel every process of the job.
The client turns either into a clean stop (no partial files, the manifest marked, the workers shut
down); a worker that took the signal itself would print a traceback, or be restarted by its nanny.
Workers still exit when the client's process goes away (distributed watches its parent).
"""
from __future__ import annotations

import signal
import threading


def dask_setup(worker) -> None:
    """Called by distributed in each worker process as it starts (``preload=[__name__]``)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
