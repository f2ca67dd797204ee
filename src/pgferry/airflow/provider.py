"""Provider metadata: what ``airflow providers list`` shows for pgferry.

Registered through the ``apache_airflow_provider`` entry point in ``pyproject.toml``. Airflow
validates the returned mapping against its runtime provider-info schema, and requires
``package-name`` to equal the distribution's name.
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """The provider-info mapping Airflow reads at start-up (no Airflow import needed)."""
    from pgferry import __version__

    return {
        "package-name": "pgferry",
        "name": "pgferry",
        "description": (
            "Fast, safe, resumable PostgreSQL-to-PostgreSQL transfers: `PgferryOperator` runs a "
            "pgferry job as a task, with lineage and dynamically mapped partitions.\n"
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "pgferry",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {"integration-name": "pgferry", "python-modules": ["pgferry.airflow.hooks"]},
        ],
        "operators": [
            {"integration-name": "pgferry", "python-modules": ["pgferry.airflow.operators"]},
        ],
    }
