"""The ``replace`` swap: build the new data in a shadow table, swap it in atomically."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import asyncpg

from pgferry import sql
from pgferry import views as pgviews
from pgferry.errors import LoadError
from pgferry.retry import RetryPolicy
from pgferry.sql import TableName

__all__ = ["ReplacePlan"]

log = logging.getLogger("pgferry")


def _side_name(prefix: str, name: str) -> str:
    """``prefix + name``, shortened with a hash if it would pass the 63-byte limit."""
    candidate = f"{prefix}{name}"
    if len(candidate.encode()) <= 63:
        return candidate
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    head = name.encode()[: 63 - len(prefix) - 11].decode(errors="ignore")
    return f"{prefix}{head}_{digest}"


_INDEXES = """
SELECT c.relname, i.indisunique, i.indisprimary,
       substr(pg_get_indexdef(i.indexrelid), strpos(pg_get_indexdef(i.indexrelid), ' USING '))
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = $1::regclass
ORDER BY c.relname
"""

_TABLE_INFO = """
SELECT obj_description(c.oid, 'pg_class'), pg_get_userbyid(c.relowner),
       n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1::regclass
"""

_DEPENDENT_VIEWS = """
SELECT DISTINCT v.oid::regclass::text, pg_get_viewdef(v.oid)
FROM pg_depend d
JOIN pg_rewrite r ON r.oid = d.objid
JOIN pg_class v ON v.oid = r.ev_class
WHERE d.refobjid = $1::regclass AND d.classid = 'pg_rewrite'::regclass
  AND v.oid <> d.refobjid AND v.relkind = 'v'
"""


_TYPES_DIFFER = """
SELECT EXISTS (
  SELECT 1 FROM pg_attribute a JOIN pg_attribute b ON b.attname = a.attname
  WHERE a.attrelid = $1::regclass AND b.attrelid = $2::regclass AND a.attnum > 0
    AND NOT a.attisdropped AND NOT b.attisdropped
    AND (a.atttypid, a.atttypmod) <> (b.atttypid, b.atttypmod))
"""


@dataclass
class ReplacePlan:
    """Build the new data in a shadow table, then swap it in with one short transaction.

    A concurrent reader sees the old table until the swap commits and the new one after: it
    never sees an empty or half-loaded table. The swap keeps indexes (under their names),
    grants, the table comment, the owner and dependent views.

    Attributes:
        target: The table being replaced.
        shadow: The table the rows are loaded into.
        existed: Whether the target existed when the run started.
    """

    target: TableName
    existed: bool
    shadow: TableName = field(init=False)
    old: TableName = field(init=False)

    def __post_init__(self) -> None:
        self.shadow = self.target.sibling(_side_name("_pgferry_new_", self.target.name))
        self.old = self.target.sibling(_side_name("_pgferry_old_", self.target.name))

    async def create_shadow_like_target(self, conn: asyncpg.Connection) -> None:
        """Create the shadow as a copy of the target's definition (no rows)."""
        await conn.execute(sql.drop_table(self.shadow))
        await conn.execute(sql.create_table_like(self.shadow, self.target))

    async def drop_shadow(self, conn: asyncpg.Connection) -> None:
        """Remove the shadow table after a failed run (the target is untouched)."""
        await conn.execute(sql.drop_table(self.shadow))

    async def swap(self, conn: asyncpg.Connection, *, lock_timeout: float, retries: int) -> None:
        """Swap the shadow in, retrying when the target's lock is not granted in time.

        Each try waits at most ``lock_timeout`` for the lock, so readers queued behind the
        swap wait no longer than that. The retries are the swap's own (the run does not retry
        a swap again: a terminal error once they are spent, so the two never multiply).

        Raises:
            LoadError: The lock was not granted after ``retries`` tries, or the swap failed
                for another reason (e.g. a materialized view or a foreign key depends on the
                target); either way the target is unchanged.
        """

        async def once() -> None:
            async with conn.transaction():
                await conn.execute(sql.set_lock_timeout(), f"{int(lock_timeout * 1000)}ms")
                if self.existed:
                    await self._swap_existing(conn)
                else:
                    await conn.execute(sql.rename_table(self.shadow, self.target.name))

        policy = RetryPolicy(retries=max(0, retries - 1), initial=0.5, cap=30.0)
        try:
            await policy.call(
                once,
                what=f"swap of {self.target}",
                retry_on=lambda exc: isinstance(exc, asyncpg.LockNotAvailableError),
            )
        except asyncpg.LockNotAvailableError as exc:
            raise LoadError(
                f"could not lock {self.target} for the replace swap after {retries} tries of "
                f"{lock_timeout:g} s, the old table is unchanged: {exc}",
            ) from exc
        except asyncpg.PostgresError as exc:
            raise LoadError(
                f"replacing {self.target} failed, the old table is unchanged: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    async def swap_in_transaction(self, conn: asyncpg.Connection) -> None:
        """Swap the shadow in inside the caller's transaction (which sets ``lock_timeout``
        and retries): the schema step's rewrite fills and swaps in one transaction."""
        await self._swap_existing(conn)

    async def _swap_existing(self, conn: asyncpg.Connection) -> None:
        target, shadow = self.target, self.shadow
        await conn.execute(sql.lock_table(target))
        info = await conn.fetchrow(_TABLE_INFO, target.sql)
        assert info is not None  # `$1::regclass` raises for a missing table: a row comes back
        comment, owner, schema, _ = info
        grants = await conn.fetch(pgviews.GRANTS, target.sql)
        # A view cannot be replaced by one whose column types differ: when the shadow's
        # types do (an evolved schema), the views are dropped and created again.
        recreated: list[pgviews.SavedView] = []
        if await conn.fetchval(_TYPES_DIFFER, target.sql, shadow.sql):
            recreated = await pgviews.save_dependent_views(conn, target)
            await pgviews.drop_views(conn, recreated)
        views = await conn.fetch(_DEPENDENT_VIEWS, target.sql)
        old_indexes = await conn.fetch(_INDEXES, target.sql)
        new_indexes = await conn.fetch(_INDEXES, shadow.sql)
        current_user = await conn.fetchval("SELECT current_user")

        await conn.execute(sql.rename_table(target, self.old.name))
        await conn.execute(sql.rename_table(shadow, target.name))
        for grantee, privilege, grantable in grants:
            await conn.execute(sql.grant(target, privilege, grantee, grantable))
        if comment is not None:
            statement = await conn.fetchval(sql.FORMAT_COMMENT_ON_TABLE, target.sql, comment)
            await conn.execute(statement)
        if owner != current_user:
            await conn.execute(await conn.fetchval(sql.FORMAT_OWNER, target.sql, owner))
        for view_name, definition in views:
            # The definition was printed before the rename, so it names the target table,
            # which now is the new one: the view follows it.
            await conn.execute(sql.replace_view(view_name, definition))
        await pgviews.restore_views(conn, recreated)
        await conn.execute(sql.drop_table(self.old))
        # LIKE … INCLUDING ALL named the copied indexes after the shadow; give them the old
        # names back (a constraint's index renames its constraint too).
        remaining = list(new_indexes)
        for name, unique, primary, definition in old_indexes:
            for i, cand in enumerate(remaining):
                if (cand[1], cand[2], cand[3]) == (unique, primary, definition):
                    if cand[0] != name:
                        await conn.execute(sql.rename_index(schema, cand[0], name))
                    del remaining[i]
                    break
