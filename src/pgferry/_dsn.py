"""DSN masking: the one function every message, log line, repr and result goes through."""

from __future__ import annotations

import re

__all__ = ["mask_dsn"]


def mask_dsn(dsn: str | None) -> str | None:
    """Return ``dsn`` with any password replaced by ``***``.

    Handles URLs (``postgresql://user:secret@host/db``, ``?password=secret``) and libpq
    keyword strings (``host=h password=secret``). Works on malformed DSNs too: masking must
    never fail, since it runs while reporting errors.
    """
    if dsn is None:
        return None
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        # Keyword form: a value ends at white space unless quoted.
        return re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)
    # URL form: libpq reads the credentials up to the last '@' before the path, so a password
    # may contain '?', '#' or ':'.
    slash = rest.find("/")
    at = rest.rfind("@", 0, slash if slash >= 0 else len(rest))
    if at >= 0 and ":" in rest[:at]:
        user = rest[:at].split(":", 1)[0]
        rest = f"{user}:***{rest[at:]}"
    rest = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", rest)
    return f"{scheme}://{rest}"
