"""``[core] hostname_callable`` of the stack's Celery workers: this machine's name plus the
worker's (``PGFERRY_STACK_WORKER``), so that ``task_instance.hostname`` tells the two workers of
one machine apart."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    """``<host>-<worker>``, or the plain host name outside a stack worker."""
    worker = os.environ.get("PGFERRY_STACK_WORKER")
    host = socket.getfqdn()
    return f"{host}-{worker}" if worker else host
