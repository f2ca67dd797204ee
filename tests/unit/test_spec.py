"""pgferry.spec: Job/Source/Target validation, DSN masking and loading job files."""

from __future__ import annotations

import importlib
import json
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgferry._dsn import mask_dsn
from pgferry.engine.functions import load_transform
from pgferry.errors import ConfigError, TransformError, TransformImportError
from pgferry.jobfile import apply_overrides, load_job, parse_overrides
from pgferry.spec import Job, Source, Target
from pgferry.sql import TableName

FIXTURES = Path(__file__).parent / "fixtures"
SECRET_DSNS = [
    "postgresql://u:secret@h:5432/db",
    "postgres://u:secret@h/db?sslmode=require",
    "postgresql://u@h/db?password=secret",
    "postgresql://h/db?sslmode=require&password=secret&application_name=x",
    "host=h password=secret user=u",
    "host=h password = secret user=u",
    "host=h PASSWORD=secret",
]


@pytest.fixture(autouse=True)
def _restore_sys_path() -> Iterator[None]:
    """load_job puts the job file's directory on sys.path; undo it after every test."""
    saved = sys.path[:]
    try:
        yield
    finally:
        sys.path[:] = saved


def _job(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"source": {"table": "src"}, "target": {"table": "tgt"}}
    data.update(changes)
    return data


def _config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        Job.from_dict(data)
    return str(info.value)


# --- Source / Target (validated as parts of a Job, the way every front end builds them) ---------


def test_source_with_table() -> None:
    src = Source(table="public.Orders", key="id")
    assert src.table == TableName("public", "orders")
    assert src.query is None
    assert src.key == ["id"]


def test_source_table_as_list_is_literal() -> None:
    src = Source(table=["s", 'x"; DROP TABLE y; --'])
    assert src.table == TableName("s", 'x"; DROP TABLE y; --')


def test_source_with_query_strips_trailing_semicolons() -> None:
    src = Source(query="  SELECT 1 AS a ;; ", key=["a", "b"])
    assert src.query == "SELECT 1 AS a"
    assert src.table is None
    assert src.key == ["a", "b"]


def test_target_defaults() -> None:
    tgt = Target(table="t")
    assert tgt.mode == "append"
    assert tgt.key is None
    assert tgt.columns == {}
    assert tgt.dsn is None


def test_target_keeps_valid_declared_types() -> None:
    assert Target(table="t", columns={"x": "numeric(38,10)"}).columns == {"x": "numeric(38,10)"}


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (_job(source={}), "source: give exactly one of 'table' or 'query'"),
        (
            _job(source={"table": "t", "query": "SELECT 1"}),
            "source: give exactly one of 'table' or 'query'",
        ),
        (_job(source={"query": " ; "}), "source: 'query' is empty"),
        (_job(source={"table": "a.b.c"}), "source.table: table name 'a.b.c' must have one or two"),
        (_job(source={"table": 5}), "source.table: expected a table name"),
        (_job(source={"table": "t", "bogus": 1}), "source.bogus: unknown key"),
        (_job(source={"table": "t", "key": 5}), "source.key: Input should be a valid list"),
        (_job(target={}), "target.table: required key is missing"),
        (_job(target={"table": "t", "mode": "merge"}), "target.mode: Input should be 'append'"),
        (
            _job(target={"table": "t", "columns": {"evil": "int; DROP TABLE x"}}),
            "target.columns: column 'evil': 'int; DROP TABLE x' is not a valid PostgreSQL type",
        ),
        (_job(target={"table": "t", "columns": {"c": 5}}), "target.columns.c: Input should be"),
    ],
)
def test_nested_errors_name_the_dotted_key_path(data: dict[str, Any], line: str) -> None:
    message = _config_error(data)
    assert f"\n  {line}" in message
    # The same through keyword arguments.
    with pytest.raises(ConfigError) as info:
        Job(**data)
    assert f"\n  {line}" in str(info.value)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Job.from_dict(_job(batch_size=0)),
        lambda: Job.from_dict(_job(source={"table": "t", "bogus": 1})),
        lambda: Job(**_job(source={"table": "a.b.c"})),
    ],
    ids=["from_dict-top-level", "from_dict-nested", "init-bad-table"],
)
def test_error_message_is_not_nested_or_repeated(build: Callable[[], Job]) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    message = str(info.value)
    assert message.startswith("invalid job:\n  ")
    assert "(top level)" not in message
    assert message.count("invalid job") == 1
    assert message.count("[stage plan]") == 1


@pytest.mark.parametrize(
    "build",
    [
        lambda: Source(dsn="postgresql://u:secret@h/db"),
        lambda: Source(dsn="postgresql://u:secret@h/db", table="t", tabel="x"),
        lambda: Target(dsn="host=h password=secret", mode="upsert"),
    ],
    ids=["source-neither", "source-unknown-key", "target-bad-mode"],
)
def test_direct_construction_errors_are_config_errors_without_secrets(
    build: Callable[[], Any],
) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert "secret" not in str(info.value)


def test_models_are_frozen() -> None:
    tgt = Target(table="t")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        tgt.mode = "replace"  # type: ignore[misc]
    assert tgt.mode == "append"


# --- Job ---------------------------------------------------------------------------------------


def test_job_defaults() -> None:
    job = Job.from_dict(_job())
    assert job.batch_size == 10_000
    assert job.queue_depth == 4
    assert job.batch_bytes == 1_048_576
    assert job.workers == "auto"
    assert job.transform is None


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("tgt", "tgt"),
        ("staging.Orders", "staging.orders"),
        ('staging."Orders"', 'staging."Orders"'),
        (["Mixed Case", "t"], '"Mixed Case".t'),
    ],
)
def test_default_name_is_the_target_table(target: Any, name: str) -> None:
    assert Job.from_dict(_job(target={"table": target})).name == name


def test_explicit_name_is_kept() -> None:
    assert Job.from_dict(_job(name="nightly")).name == "nightly"


def test_job_accepts_model_instances() -> None:
    job = Job(source=Source(query="SELECT 1"), target=Target(table="t"))
    assert job.source.query == "SELECT 1"
    assert job.name == "t"


def test_unknown_top_level_key_is_named() -> None:
    message = _config_error(_job(batchsize=5))
    assert "\n  batchsize: unknown key" in message


def test_missing_required_keys_are_named() -> None:
    message = _config_error({})
    assert "\n  source: required key is missing" in message
    assert "\n  target: required key is missing" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("batch_size", "lots"),
        ("queue_depth", [1]),
        ("connect_timeout", "soon"),
        ("swap_retries", 1.5),
        ("name", 5),
    ],
)
def test_wrong_types_are_named(key: str, value: Any) -> None:
    message = _config_error(_job(**{key: value}))
    assert f"\n  {key}: " in message


@pytest.mark.parametrize(
    "path",
    ["pkg.mod:fn", "mod:fn", "pkg.sub.mod:Cls.method", "_m:_f", "m1:f2"],
)
def test_transform_import_path_accepted(path: str) -> None:
    assert Job.from_dict(_job(transform=path)).transform == path


@pytest.mark.parametrize(
    "path", ["nope", "pkg.mod:", ":fn", "pkg mod:fn", "pkg.mod:fn()", "1mod:fn", "a:b:c"]
)
def test_transform_import_path_rejected(path: str) -> None:
    message = _config_error(_job(transform=path))
    assert "transform:" in message
    assert "package.module:function" in message


def test_transform_callable_accepted() -> None:
    def fn(row: dict[str, Any]) -> dict[str, Any]:
        return row

    assert Job.from_dict(_job(transform=fn)).transform is fn


@pytest.mark.parametrize("workers", ["auto", 0, 1, 64])
def test_workers_accepted(workers: Any) -> None:
    assert Job.from_dict(_job(workers=workers)).workers == workers


@pytest.mark.parametrize("workers", [-1, 65, "many", "AUTO", 2.5])
def test_workers_rejected(workers: Any) -> None:
    message = _config_error(_job(workers=workers))
    assert "workers" in message


def test_workers_range_message() -> None:
    assert "from 0 to 64" in _config_error(_job(workers=65))


@pytest.mark.parametrize("size", [1, 10_000_000])
def test_batch_size_bounds_accepted(size: int) -> None:
    assert Job.from_dict(_job(batch_size=size)).batch_size == size


@pytest.mark.parametrize(
    ("size", "fragment"),
    [(0, "greater than or equal to 1"), (10_000_001, "less than or equal to 10000000")],
)
def test_batch_size_bounds_rejected(size: int, fragment: str) -> None:
    message = _config_error(_job(batch_size=size))
    assert "batch_size:" in message
    assert fragment in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("queue_depth", 0),
        ("connect_timeout", 0),
        ("statement_timeout", -1),
        ("swap_retries", 0),
        ("batch_bytes", 1000),
        ("batch_bytes", 2**31),
    ],
)
def test_other_knob_bounds(key: str, value: Any) -> None:
    assert f"{key}:" in _config_error(_job(**{key: value}))


def test_from_dict_names_where() -> None:
    with pytest.raises(ConfigError, match="invalid operator config"):
        Job.from_dict({}, where="operator config")


def test_with_overrides_revalidates_and_keeps_tables() -> None:
    job = Job.from_dict(_job(target={"table": ["Mixed Case", 'we"ird; --'], "key": "id"}))
    changed = job.with_overrides(batch_size=7)
    assert changed.batch_size == 7
    assert changed.target.table == TableName("Mixed Case", 'we"ird; --')
    assert changed.target.key == ["id"]
    assert job.batch_size == 10_000
    with pytest.raises(ConfigError, match="batch_size"):
        job.with_overrides(batch_size=0)


# --- mask_dsn and secrets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://h/db?password=secret", "postgresql://h/db?password=***"),
        (
            "postgresql://u@h/db?sslmode=require&password=secret&application_name=x",
            "postgresql://u@h/db?sslmode=require&password=***&application_name=x",
        ),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgresql:///db", "postgresql:///db"),
        ("host=h password=secret user=u", "host=h password=*** user=u"),
        ("host=h password='a b' user=u", "host=h password=*** user=u"),
        (r"host=h password='it\'s' user=u", "host=h password=*** user=u"),
        ("host=h user=u", "host=h user=u"),
        ("", ""),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_mask_dsn_none() -> None:
    assert mask_dsn(None) is None


@pytest.mark.parametrize("dsn", SECRET_DSNS)
def test_mask_dsn_hides_the_password(dsn: str) -> None:
    masked = mask_dsn(dsn)
    assert masked is not None
    assert "secret" not in masked
    assert "***" in masked


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        (
            "postgresql://u:secret@h1:5432,h2:5433/db?target_session_attrs=any",
            "postgresql://u:***@h1:5432,h2:5433/db?target_session_attrs=any",
        ),
        ("postgresql://u:secret@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:secret@h", "postgresql://u:***@h"),
    ],
)
def test_mask_dsn_unusual_urls(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


@pytest.mark.parametrize("dsn", ["postgresql://u:se?cret@h/db", "postgresql://u:se#cret@h/db"])
def test_mask_dsn_password_with_query_or_fragment_character(dsn: str) -> None:
    masked = mask_dsn(dsn)
    assert masked is not None
    assert "cret" not in masked


def test_mask_dsn_libpq_password_with_ampersand() -> None:
    assert mask_dsn("host=h password=se&cret user=u") == "host=h password=*** user=u"


@pytest.mark.parametrize("dsn", SECRET_DSNS)
def test_job_repr_str_and_describe_hide_passwords(dsn: str) -> None:
    job = Job.from_dict(
        {"source": {"dsn": dsn, "table": "s"}, "target": {"dsn": dsn, "table": "t"}}
    )
    assert job.source.dsn == dsn  # the real DSN is still there to connect with
    for text in (repr(job), str(job), repr(job.source), str(job.target)):
        assert "secret" not in text
        assert "***" in text
    described = json.dumps(job.describe())
    assert "secret" not in described
    assert "***" in described


def test_describe_is_json_with_tables_as_parts_and_transform_path() -> None:
    def fn(row: dict[str, Any]) -> dict[str, Any]:
        return row

    job = Job.from_dict(
        _job(target={"table": 'public."My T"', "columns": {"c": "text"}}, transform=fn)
    )
    data = json.loads(json.dumps(job.describe()))
    assert data["target"]["table"] == ["public", "My T"]
    assert data["source"]["table"] == ["src"]
    assert data["target"]["columns"] == {"c": "text"}
    assert data["transform"] == f"{__name__}:{fn.__qualname__}"
    assert data["name"] == 'public."My T"'
    assert Job.from_dict(_job(transform="a.b:c")).describe()["transform"] == "a.b:c"


def _chain_text(exc: BaseException) -> str:
    """What a logged traceback prints of the exceptions themselves (source lines left out)."""
    texts = []
    seen: BaseException | None = exc
    while seen is not None:
        texts.extend(traceback.format_exception_only(seen))
        seen = seen.__cause__ or seen.__context__
    return "".join(texts)


def test_validation_error_traceback_hides_passwords() -> None:
    with pytest.raises(ConfigError) as info:
        Job(source={"dsn": "postgresql://u:secret@h/db"}, target={"table": "t"})
    assert "secret" not in str(info.value)
    assert "secret" not in _chain_text(info.value)


def test_from_dict_traceback_hides_passwords() -> None:
    with pytest.raises(ConfigError) as info:
        Job.from_dict({"source": {"dsn": "postgresql://u:secret@h/db"}, "target": {}})
    assert "secret" not in str(info.value)
    assert "secret" not in _chain_text(info.value)


# --- parse_overrides / apply_overrides ----------------------------------------------------------


def test_parse_overrides_types_values() -> None:
    assert parse_overrides(
        ["target.table=x", "batch_size=100", "workers=auto", "flag=true", "t=1.5", "e="]
    ) == {
        "target.table": "x",
        "batch_size": 100,
        "workers": "auto",
        "flag": True,
        "t": 1.5,
        "e": "",
    }


def test_parse_overrides_keeps_equals_in_the_value() -> None:
    assert parse_overrides(["source.dsn=host=h port=5"]) == {"source.dsn": "host=h port=5"}
    assert parse_overrides([" target.key = [a, b]"]) == {"target.key": ["a", "b"]}


@pytest.mark.parametrize(
    ("item", "fragment"),
    [("x", "expected key=value"), ("=1", "expected key=value"), ("a=[1", "cannot parse")],
)
def test_parse_overrides_errors(item: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_overrides([item])
    assert fragment in str(info.value)
    assert repr(item) in str(info.value)


def test_apply_overrides_sets_dotted_keys() -> None:
    data: dict[str, Any] = {"target": {"table": "a", "mode": "append"}}
    out = apply_overrides(data, {"target.table": "x", "batch_size": 100, "new.deep.key": 1})
    assert out is data
    assert data == {
        "target": {"table": "x", "mode": "append"},
        "batch_size": 100,
        "new": {"deep": {"key": 1}},
    }


def test_apply_overrides_refuses_to_descend_into_a_value() -> None:
    with pytest.raises(ConfigError, match="'batch_size' is not a section"):
        apply_overrides({"batch_size": 5}, {"batch_size.x": 1})


# --- load_job ----------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


SIMPLE_YAML = "source:\n  table: src\ntarget:\n  table: tgt\n"


@pytest.mark.parametrize("name", ["job.yaml", "job.toml"])
def test_load_fixture_files(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGFERRY_UNIT_SRC_DSN", "postgresql://reader:secret@src:5432/app")
    monkeypatch.delenv("PGFERRY_UNIT_TGT_DSN", raising=False)
    job = load_job(FIXTURES / name)
    assert job.name == "orders_copy"
    assert job.source.dsn == "postgresql://reader:secret@src:5432/app"
    assert job.source.table == TableName("public", "orders")
    assert job.source.key == ["id"]
    assert job.target.dsn == "postgresql://loader@warehouse:5432/dwh"
    assert job.target.table == TableName("Staging", "orders; --")
    assert job.target.mode == "replace"
    assert job.target.columns == {"total": "numeric(38,10)"}
    assert job.transform == "my_transforms.orders:clean"
    assert (job.batch_size, job.workers) == (5000, 0)
    assert "secret" not in repr(job)
    assert str(FIXTURES.resolve()) in sys.path


def test_yaml_and_toml_fixtures_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGFERRY_UNIT_SRC_DSN", "host=src")
    monkeypatch.setenv("PGFERRY_UNIT_TGT_DSN", "host=tgt")
    yaml_job = load_job(FIXTURES / "job.yaml")
    assert yaml_job.target.dsn == "host=tgt"
    assert yaml_job == load_job(FIXTURES / "job.toml")


def test_load_yml_suffix_and_str_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "job.yml", SIMPLE_YAML)
    assert load_job(str(path)).target.table == TableName(None, "tgt")


def test_interpolation_in_lists_numbers_and_mid_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGFERRY_UNIT_K", "id")
    monkeypatch.setenv("PGFERRY_UNIT_BS", "250")
    monkeypatch.setenv("PGFERRY_UNIT_SCHEMA", "staging")
    path = _write(
        tmp_path,
        "job.yaml",
        "source:\n  table: src\n  key: ['${PGFERRY_UNIT_K}', other]\n"
        "target:\n  table: ${PGFERRY_UNIT_SCHEMA}.tgt_${PGFERRY_UNIT_NONE:-v1}\n"
        "batch_size: ${PGFERRY_UNIT_BS}\n",
    )
    monkeypatch.delenv("PGFERRY_UNIT_NONE", raising=False)
    job = load_job(path)
    assert job.source.key == ["id", "other"]
    assert job.target.table == TableName("staging", "tgt_v1")
    assert job.batch_size == 250


def test_env_value_wins_over_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGFERRY_UNIT_T", "from_env")
    path = _write(
        tmp_path, "job.yaml", "source:\n  table: src\ntarget:\n  table: ${PGFERRY_UNIT_T:-dflt}\n"
    )
    assert load_job(path).target.table == TableName(None, "from_env")


def test_empty_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGFERRY_UNIT_T", raising=False)
    path = _write(
        tmp_path, "job.yaml", "source:\n  table: src\ntarget:\n  table: tgt${PGFERRY_UNIT_T:-}\n"
    )
    assert load_job(path).target.table == TableName(None, "tgt")


def test_colon_dash_default_applies_to_empty_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGFERRY_UNIT_T", "")
    path = _write(
        tmp_path, "job.yaml", "source:\n  table: src\ntarget:\n  table: ${PGFERRY_UNIT_T:-dflt}\n"
    )
    assert load_job(path).target.table == TableName(None, "dflt")


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        ("source:\n  dsn: ${PGFERRY_UNIT_MISSING}\n  table: s\n"
         "target:\n  table: t\n", "source.dsn"),
        ("source:\n  table: s\n  key: [a, '${PGFERRY_UNIT_MISSING}']\n"
         "target:\n  table: t\n", "source.key[1]"),
        ("name: ${PGFERRY_UNIT_MISSING}\nsource:\n  table: s\ntarget:\n  table: t\n", "name"),
    ],
)  # fmt: skip
def test_missing_variable_names_variable_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, key_path: str
) -> None:
    monkeypatch.delenv("PGFERRY_UNIT_MISSING", raising=False)
    with pytest.raises(ConfigError) as info:
        load_job(_write(tmp_path, "job.yaml", text))
    message = str(info.value)
    assert "PGFERRY_UNIT_MISSING" in message
    assert message.startswith(f"{key_path}: ")


def test_missing_variable_in_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGFERRY_UNIT_MISSING", raising=False)
    text = '[source]\ntable = "s"\n[target]\ntable = "t"\ndsn = "${PGFERRY_UNIT_MISSING}"\n'
    with pytest.raises(ConfigError, match=r"target\.dsn: .*PGFERRY_UNIT_MISSING"):
        load_job(_write(tmp_path, "job.toml", text))


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "job.yaml", SIMPLE_YAML + "batchsize: 5\n")
    with pytest.raises(ConfigError) as info:
        load_job(path)
    assert repr(str(path)) in str(info.value)
    assert "batchsize: unknown key" in str(info.value)


def test_nested_unknown_key_names_file_and_dotted_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "job.yaml", SIMPLE_YAML + "  colour: red\n")
    with pytest.raises(ConfigError) as info:
        load_job(path)
    assert repr(str(path)) in str(info.value)
    assert "\n  target.colour: unknown key" in str(info.value)


def test_wrong_type_in_toml_names_file_and_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "job.toml", 'batch_size = "lots"\n[source]\ntable = "s"\n[target]\ntable = "t"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_job(path)
    assert repr(str(path)) in str(info.value)
    assert "batch_size: Input should be a valid integer" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_job(path)
    assert str(info.value).startswith(f"cannot read job file {str(path)!r}: No such file")
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_unreadable_file(tmp_path: Path) -> None:
    # A directory cannot be read as a file, even by root (which ignores permission bits).
    with pytest.raises(ConfigError, match="cannot read job file"):
        load_job(tmp_path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("job.yaml", "source: [\n"),
        ("job.yaml", "source:\n  table: s\n table: t\n"),
        ("job.toml", "[source\ntable = 's'\n"),
        ("job.toml", "batch_size = \n"),
    ],
)
def test_invalid_syntax(tmp_path: Path, name: str, text: str) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_job(path)
    assert str(info.value).startswith(f"cannot parse job file {str(path)!r}")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "job.yaml", "source:\n  table: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="job file"):
        load_job(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="must hold a mapping at the top level"):
        load_job(_write(tmp_path, "job.yaml", text))


def test_empty_file_reports_missing_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_job(_write(tmp_path, "job.yaml", ""))
    assert "source: required key is missing" in str(info.value)
    assert "target: required key is missing" in str(info.value)


def test_load_job_with_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "job.yaml", SIMPLE_YAML + "batch_size: 5\n")
    job = load_job(path, parse_overrides(["target.table=x", "batch_size=100", "source.key=id"]))
    assert job.target.table == TableName(None, "x")
    assert job.batch_size == 100
    assert job.source.key == ["id"]
    assert job.name == "x"


def test_overrides_are_interpolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGFERRY_UNIT_T", "from_env")
    path = _write(tmp_path, "job.yaml", SIMPLE_YAML)
    job = load_job(path, {"target.table": "${PGFERRY_UNIT_T}"})
    assert job.target.table == TableName(None, "from_env")


def test_invalid_override_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "job.yaml", SIMPLE_YAML)
    with pytest.raises(ConfigError, match="batch_size"):
        load_job(path, parse_overrides(["batch_size=0"]))


def test_transform_module_beside_the_job_file_is_importable(tmp_path: Path) -> None:
    module = f"pgferry_unit_tx_{uuid.uuid4().hex[:8]}"
    job_dir = tmp_path / "jobs"
    job_dir.mkdir()
    _write(job_dir, f"{module}.py", "def clean(row):\n    return {'x': row['x'] * 2}\n")
    path = _write(job_dir, "job.yaml", SIMPLE_YAML + f"transform: {module}:clean\n")
    try:
        job = load_job(path)
        assert job.transform == f"{module}:clean"
        assert sys.path[0] == str(job_dir.resolve())
        importlib.invalidate_caches()
        fn = load_transform(f"{module}:clean")
        assert fn({"x": 21}) == {"x": 42}
        # Loading again does not add the directory twice.
        load_job(path)
        assert sys.path.count(str(job_dir.resolve())) == 1
    finally:
        sys.modules.pop(module, None)


def test_transform_module_elsewhere_is_not_importable(tmp_path: Path) -> None:
    module = f"pgferry_unit_tx_{uuid.uuid4().hex[:8]}"
    _write(tmp_path, f"{module}.py", "def clean(row):\n    return row\n")
    importlib.invalidate_caches()
    with pytest.raises(TransformImportError) as info:
        load_transform(f"{module}:clean")
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, TransformError)
    sys.modules.pop(module, None)
