"""Lanes: how rows travel between extract and sink (decoded rows, Arrow batches, COPY bytes)."""
