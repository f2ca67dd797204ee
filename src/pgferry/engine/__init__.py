"""The engine: extract → transform → load, one room per stage, lane and sink.

:mod:`pgferry.engine.run` runs a job (lock, run history, retries) as attempts
(:mod:`pgferry.engine.attempt`), each of which moves rows through a lane
(:mod:`pgferry.engine.lanes`) into a sink (:mod:`pgferry.engine.sinks`).
"""

from pgferry.engine.progress import Progress, ProgressCallback, ProgressLogger
from pgferry.engine.run import run_async

__all__ = ["Progress", "ProgressCallback", "ProgressLogger", "run_async"]
