"""pgferry for Apache Airflow 3: a hook, an operator, lineage and provider metadata.

``import pgferry`` never imports Airflow; this package does, at module level.
"""

from __future__ import annotations

from pgferry.airflow.hooks import PgferryHook, table_asset
from pgferry.airflow.operators import PgferryOperator
from pgferry.airflow.provider import get_provider_info

__all__ = ["PgferryHook", "PgferryOperator", "get_provider_info", "table_asset"]
