"""The engine: extract → transform → load, wired by :mod:`pgferry.engine.pipeline` and run
(with the ledger, locks, run history and retries) by :mod:`pgferry.engine.run`."""

from pgferry.engine.pipeline import Progress, ProgressCallback
from pgferry.engine.run import run_async

__all__ = ["Progress", "ProgressCallback", "run_async"]
