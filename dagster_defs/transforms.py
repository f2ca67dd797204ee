"""Transforms of the example assets (imported by pgferry as ``dagster_defs.transforms:…``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pgferry


# Column lineage for Dagster (and OpenLineage in Airflow): the columns a new one is made from.
@pgferry.column_lineage(email_domain=["email"])
def clean_customer(row: Mapping[str, Any]) -> dict[str, Any]:
    """Trim the name, lower-case the e-mail address and add its domain."""
    email = row["email"].strip().lower()
    return {
        **row,
        "name": row["name"].strip(),
        "email": email,
        "email_domain": email.rpartition("@")[2],
    }
