"""The process one method runs in: ``python -m benchmarks.child`` with a JSON config on stdin.

It runs the method once and prints one JSON line: the time the transfer itself took (from the
first connection to the last close, without interpreter start-up and imports), its own
``ru_maxrss``, that of its largest waited-for descendant, and the method's details. Everything
else (wall time, CPU, tree RSS) the parent measures from the outside.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path

from benchmarks.methods import METHODS, MethodConfig
from benchmarks.methods.common import event_loop_name


def peak_rss_of_this_process() -> int | None:
    """``VmHWM``: the high-water mark of this process's own memory since its ``exec``, bytes.

    Unlike ``ru_maxrss``, it does not carry over the parent's high-water mark: Linux keeps
    ``ru_maxrss`` across fork and exec, so a child of a large parent starts at the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def main() -> int:
    """Run the method named in the config on stdin; 0 on success."""
    # pgferry's warnings (e.g. "transform inline") go to stderr, which the parent keeps.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = MethodConfig.from_dict(json.loads(sys.stdin.read()))
    run = METHODS[config.method].load()
    start = time.perf_counter()
    detail = run(config)
    transfer = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    report = {
        "method": config.method,
        "transfer_s": transfer,
        "ru_maxrss_bytes": own.ru_maxrss * unit,
        "vmhwm_bytes": peak_rss_of_this_process(),
        "children_maxrss_bytes": kids.ru_maxrss * unit,
        "event_loop": event_loop_name(),
        "detail": detail,
    }
    print(json.dumps(report, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
