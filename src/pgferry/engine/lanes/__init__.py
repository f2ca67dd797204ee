"""Lanes: how rows travel from the extract stage to the sink.

* :mod:`.rows`: decoded rows through the transform stage (inline or in a process pool).
* :mod:`.pipe`: undecoded binary ``COPY`` bytes, source to target, when there is no transform.
* :mod:`.columnar`: Arrow record batches through an Arrow or Polars transform, written as
  binary ``COPY`` (``pgferry[arrow]``, ``pgferry[polars]``).

Each lane keeps the same guarantees (one snapshot, commits in extraction order, the ledger row
with every batch, rejects, retries); the transform's kind chooses the lane, not a user's flag.
"""
