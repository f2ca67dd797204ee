"""Sinks: the load stage's destinations behind one interface (:class:`~.base.Sink`).

* :mod:`.postgres`: a PostgreSQL table, through binary ``COPY`` (staging and merge for upsert,
  a shadow table for replace); the ledger in the same database, in the batch's transaction.
* :mod:`.http`: an HTTP endpoint, requests under idempotency keys; the ledger in ``state.dsn``,
  advanced in order once every request of a batch has succeeded.
"""
