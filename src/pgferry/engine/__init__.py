"""The engine: extract → transform → load, wired by :mod:`pgferry.engine.pipeline`."""

from pgferry.engine.pipeline import Progress, ProgressCallback, run_async

__all__ = ["Progress", "ProgressCallback", "run_async"]
