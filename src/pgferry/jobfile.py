"""Job files: reading YAML/TOML, ``${VAR}`` interpolation and ``--set`` style overrides.

:func:`load_job` turns a file into a validated :class:`~pgferry.spec.Job`. The CLI reads its
``--set`` options with :func:`parse_overrides`; it, the Airflow operator and the Dagster asset
factory set dotted keys of a job's data with :func:`apply_overrides` before validation.
:mod:`pgferry.spec` re-exports these names.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pgferry.errors import ConfigError
from pgferry.spec import Job

__all__ = ["apply_overrides", "load_job", "parse_overrides"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _interpolate(value: Any, path: str) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            value = os.environ.get(var)
            if value or (value is not None and default is None):
                return value
            if default is not None:  # as in the shell, :- also replaces an empty value
                return default
            raise ConfigError(f"{path}: environment variable {var} is not set")

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _yaml() -> Any:
    """PyYAML, imported when a job file or an override is read: a job built in Python (an
    Airflow task, a Dagster asset, the benchmark) never pays for it (≈ 10 ms, 2 MiB)."""
    import yaml

    return yaml


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["target.table=x", "batch_size=100"]`` into ``{"target.table": "x", ...}``.

    Values are parsed as YAML scalars, so numbers and booleans get their types.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        yaml = _yaml()
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: cannot parse the value: {exc}") from exc
    return out


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``target.table``) in a nested mapping, creating levels as needed."""
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_job(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Job:
    """Load a job from a YAML (``.yaml``, ``.yml``) or TOML (``.toml``) file.

    ``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the environment. The
    file's directory is put on ``sys.path`` so that ``transform: my_module:fn`` finds a module
    that sits beside the job file.

    Args:
        path: The job file.
        overrides: Dotted keys to set before validation (``{"target.table": "x"}``).

    Raises:
        ConfigError: If the file cannot be read or parsed, or the job is invalid; the message
            names the file and the offending key.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read job file {str(file)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"job file {str(file)!r} is not UTF-8 text: {exc.reason}") from exc
    yaml = _yaml()
    try:
        if file.suffix.lower() == ".toml":
            raw: Any = tomllib.loads(text)
        else:
            raw = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot parse job file {str(file)!r}: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"job file {str(file)!r} must hold a mapping at the top level")
    data = _interpolate(apply_overrides(raw, overrides or {}), "")
    job_dir = str(file.resolve().parent)
    if job_dir not in sys.path:
        sys.path.insert(0, job_dir)
    return Job.from_dict(data, f"job file {str(file)!r}")
