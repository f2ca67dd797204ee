"""Views that depend on a table: saved, dropped and created again around a column type change.

PostgreSQL refuses ``ALTER COLUMN … TYPE`` on a column a view uses, and ``CREATE OR REPLACE
VIEW`` cannot change a view column's type. So a type change (in place, or the swap of a
rewritten copy) drops the views that depend on the changed columns (and the views on those
views), and creates them again from their saved definitions in the same transaction, with
their options, comment, owner and grants: a reader sees the old views or the new ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from pgferry import ddl, sql
from pgferry.errors import SchemaError
from pgferry.sql import TableName

__all__ = ["GRANTS", "SavedView", "drop_views", "restore_views", "save_dependent_views"]

# Views (and materialized views) over the given columns of the table (all of them when the
# column list is NULL), then the views over those, deepest last.
_DEPENDENTS = """
WITH RECURSIVE deps(oid, depth) AS (
  SELECT r.ev_class, 1
  FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
  WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
    AND d.refobjid = $1::regclass AND r.ev_class <> $1::regclass
    AND ($2::text[] IS NULL OR d.refobjsubid IN (
         SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = ANY ($2)))
  UNION
  SELECT r.ev_class, deps.depth + 1
  FROM deps JOIN pg_depend d ON d.refobjid = deps.oid AND d.refclassid = 'pg_class'::regclass
  JOIN pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_rewrite'::regclass
  WHERE r.ev_class <> deps.oid AND deps.depth < 50
)
SELECT c.oid::regclass::text, c.relkind::text, pg_get_viewdef(c.oid), c.reloptions,
       obj_description(c.oid, 'pg_class'), pg_get_userbyid(c.relowner), max(deps.depth)
FROM deps JOIN pg_class c ON c.oid = deps.oid
GROUP BY c.oid
ORDER BY max(deps.depth), c.oid
"""

# A relation's grants to roles other than its owner (the owner's are implicit); the replace
# swap re-applies the target's, and saved views keep theirs.
GRANTS = """
SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
       a.privilege_type, a.is_grantable
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = $1::regclass AND a.grantee <> c.relowner
"""

_COLUMN_COMMENTS = """
SELECT a.attname, col_description(a.attrelid, a.attnum)
FROM pg_attribute a
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND col_description(a.attrelid, a.attnum)
      IS NOT NULL
"""


@dataclass(frozen=True)
class SavedView:
    """Everything needed to create a view again.

    Attributes:
        name: The view's qualified name as the server prints it (``regclass`` text).
        definition: ``pg_get_viewdef`` output.
        options: ``reloptions`` (``security_barrier=true``…).
        comment: The view's comment.
        owner: Its owner.
        grants: ``(grantee or None for PUBLIC, privilege, with grant option)``.
        column_comments: ``(column, comment)``.
    """

    name: str
    definition: str
    options: tuple[str, ...]
    comment: str | None
    owner: str
    grants: tuple[tuple[str | None, str, bool], ...]
    column_comments: tuple[tuple[str, str], ...]


async def save_dependent_views(
    conn: asyncpg.Connection, table: TableName, columns: Sequence[str] | None = None
) -> list[SavedView]:
    """The views over ``columns`` of ``table`` (all columns: ``None``), shallowest first.

    Raises:
        SchemaError: A materialized view depends on them: dropping it would drop its data,
            so pgferry leaves the change to its owner.
    """
    out: list[SavedView] = []
    cols = list(columns) if columns is not None else None
    for name, kind, definition, options, comment, owner, _ in await conn.fetch(
        _DEPENDENTS, table.sql, cols
    ):
        if kind != "v":
            raise SchemaError(
                f"materialized view {name} depends on {table}: changing a column's type would "
                "drop it; change the type yourself (or drop the view) and run again"
            )
        grants = await conn.fetch(GRANTS, name)
        comments = await conn.fetch(_COLUMN_COMMENTS, name)
        out.append(
            SavedView(
                name=name,
                definition=definition,
                options=tuple(options or ()),
                comment=comment,
                owner=owner,
                grants=tuple((g[0], g[1], g[2]) for g in grants),
                column_comments=tuple((c[0], c[1]) for c in comments),
            )
        )
    return out


async def drop_views(conn: asyncpg.Connection, saved: Sequence[SavedView]) -> None:
    """Drop the saved views, deepest first (no CASCADE: anything unsaved makes it fail)."""
    for view in reversed(saved):
        await conn.execute(ddl.drop_view(view.name))


async def restore_views(conn: asyncpg.Connection, saved: Sequence[SavedView]) -> None:
    """Create the saved views again, shallowest first, with comment, owner and grants."""
    current_user = await conn.fetchval("SELECT current_user")
    for view in saved:
        await conn.execute(ddl.create_view(view.name, view.definition, view.options))
        if view.comment is not None:
            await conn.execute(
                await conn.fetchval(ddl.FORMAT_COMMENT_ON_VIEW, view.name, view.comment)
            )
        for column, comment in view.column_comments:
            await conn.execute(
                await conn.fetchval(sql.FORMAT_COMMENT_ON_COLUMN, view.name, column, comment)
            )
        if view.owner != current_user:
            await conn.execute(await conn.fetchval(ddl.FORMAT_VIEW_OWNER, view.name, view.owner))
        for grantee, privilege, grantable in view.grants:
            await conn.execute(sql.grant_on(view.name, privilege, grantee, grantable))
