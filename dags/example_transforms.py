"""Row transforms for the pgferry examples.

A transform is referred to by its import path (``example_transforms:clean_customer``); this
module sits in the examples' folder, which is on ``sys.path`` wherever the tasks run, including
the transform processes pgferry starts.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pgferry


# Column lineage for OpenLineage: which source columns each new column is computed from.
@pgferry.column_lineage(first_name=["name"], last_name=["name"])
def clean_customer(row: dict[str, Any]) -> dict[str, Any]:
    """Split the name, normalise the e-mail address; other columns pass through."""
    first, _, last = row["name"].strip().partition(" ")
    return {
        "id": row["id"],
        "first_name": first,
        "last_name": last,
        "email": row["email"].strip().lower(),
        "country": row["country"],
        "signed_up_at": row["signed_up_at"],
    }


@pgferry.column_lineage(amount_gross=["amount"])
def with_gross_amount(row: dict[str, Any]) -> dict[str, Any]:
    """Add the amount with 20 % VAT."""
    return {**row, "amount_gross": (row["amount"] * Decimal("1.2")).quantize(Decimal("0.01"))}
