"""pgferry.errors: messages with context, context filling, pickling, the Transient marker."""

from __future__ import annotations

import copy
import pickle

import pytest

from pgferry import errors
from pgferry.errors import (
    ConcurrentRunError,
    ConfigError,
    ConnectError,
    EmbeddedPostgresError,
    ExtractError,
    JobValidationError,
    LoadError,
    PgferryError,
    RowLevelPipeFailure,
    SchemaError,
    SchemaLockError,
    TransformError,
    TransformImportError,
    Transient,
    TransientConnectError,
    TransientError,
    TransientExtractError,
    TransientLoadError,
)

ERROR_CLASSES: list[type[PgferryError]] = [
    PgferryError,
    ConfigError,
    SchemaError,
    ConnectError,
    TransientConnectError,
    ExtractError,
    TransientExtractError,
    TransformError,
    LoadError,
    TransientLoadError,
    TransientError,
    TransformImportError,
    JobValidationError,
    ConcurrentRunError,
    RowLevelPipeFailure,
    EmbeddedPostgresError,
    SchemaLockError,
]


def test_every_public_error_class_is_covered() -> None:
    public = {
        obj
        for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type) and issubclass(obj, PgferryError)
    }
    assert public <= set(ERROR_CLASSES)


def test_every_error_class_lives_in_errors() -> None:
    import pgferry

    for cls in ERROR_CLASSES:
        assert cls.__module__ == "pgferry.errors", cls
    for name in ("ConcurrentRunError", "JobValidationError", "TransformImportError"):
        assert getattr(pgferry, name) is getattr(errors, name)


def test_result_is_declared_and_none_by_default() -> None:
    assert PgferryError("x").result is None


def test_message_with_full_context() -> None:
    exc = LoadError("duplicate key", job="x", batch=3, column="c")
    assert str(exc) == "duplicate key [job 'x', stage load, batch 3, column 'c']"
    assert exc.message == "duplicate key"
    assert exc.args == ("duplicate key",)


def test_message_without_context() -> None:
    exc = PgferryError("plain")
    assert str(exc) == "plain"
    assert (exc.job, exc.stage, exc.batch, exc.column) == (None, None, None, None)


def test_message_with_partial_context() -> None:
    assert str(ConnectError("refused", job="j")) == "refused [job 'j']"
    assert str(PgferryError("m", batch=0)) == "m [batch 0]"
    assert str(PgferryError("m", column="a b")) == "m [column 'a b']"


def test_names_are_shown_with_repr_so_odd_names_stay_readable() -> None:
    exc = PgferryError("m", job="it's", column='x"; --')
    assert str(exc) == "m [job \"it's\", column 'x\"; --']"


@pytest.mark.parametrize(
    ("cls", "stage"),
    [
        (PgferryError, None),
        (ConfigError, "plan"),
        (SchemaError, "plan"),
        (ConnectError, None),
        (TransientConnectError, None),
        (ExtractError, "extract"),
        (TransientExtractError, "extract"),
        (TransformError, "transform"),
        (LoadError, "load"),
        (TransientLoadError, "load"),
        (TransformImportError, "plan"),
    ],
)
def test_default_stage(cls: type[PgferryError], stage: str | None) -> None:
    assert cls("m").stage == stage


def test_explicit_stage_wins_over_default() -> None:
    assert LoadError("m", stage="swap").stage == "swap"
    assert str(LoadError("m", stage="swap")) == "m [stage swap]"


def test_with_context_fills_only_unknown_fields() -> None:
    exc = TransformError("bad row", column="c")
    same = exc.with_context(job="j", batch=7, column="other", stage="load")
    assert same is exc
    assert exc.job == "j"
    assert exc.batch == 7
    assert exc.column == "c"  # known: kept
    assert exc.stage == "transform"  # known from the class default: kept
    assert str(exc) == "bad row [job 'j', stage transform, batch 7, column 'c']"


def test_with_context_does_not_overwrite_with_none_or_twice() -> None:
    exc = ExtractError("lost").with_context(job="first")
    exc.with_context(job="second", batch=None)
    assert exc.job == "first"
    assert exc.batch is None


def test_with_context_fills_batch_zero() -> None:
    exc = LoadError("m").with_context(batch=0)
    assert exc.batch == 0
    # 0 is a known batch number, not "unknown".
    exc.with_context(batch=5)
    assert exc.batch == 0


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_pickle_round_trip_keeps_context(cls: type[PgferryError]) -> None:
    exc = cls("something broke", job="nightly", stage="load", batch=3, column="c")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert back.message == "something broke"
    assert (back.job, back.stage, back.batch, back.column) == ("nightly", "load", 3, "c")
    assert str(back) == str(exc)
    assert back.args == exc.args


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_pickle_round_trip_keeps_default_stage_and_missing_context(
    cls: type[PgferryError],
) -> None:
    exc = cls("m")
    back = pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(back) is cls
    assert (back.job, back.stage, back.batch, back.column) == (None, exc.stage, None, None)


def test_pickle_keeps_context_added_later() -> None:
    exc = TransformError("m").with_context(job="j", batch=2)
    back = pickle.loads(pickle.dumps(exc))
    assert str(back) == "m [job 'j', stage transform, batch 2]"


def test_copy_keeps_context() -> None:
    exc = LoadError("m", job="j", batch=1)
    assert str(copy.copy(exc)) == str(exc)
    assert str(copy.deepcopy(exc)) == str(exc)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(SchemaError, ConfigError)
    assert issubclass(SchemaError, ValueError)
    with pytest.raises(ValueError):
        raise ConfigError("bad option")


def test_transform_import_error_is_both_config_and_transform_error() -> None:
    assert issubclass(TransformImportError, ConfigError)
    assert issubclass(TransformImportError, TransformError)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_is_a_pgferry_error(cls: type[PgferryError]) -> None:
    assert issubclass(cls, PgferryError)
    assert issubclass(cls, Exception)


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (TransientConnectError, ConnectError),
        (TransientExtractError, ExtractError),
        (TransientLoadError, LoadError),
    ],
)
def test_transient_classes(cls: type[PgferryError], base: type[PgferryError]) -> None:
    exc = cls("connection lost")
    assert isinstance(exc, Transient)
    assert isinstance(exc, base)
    assert isinstance(pickle.loads(pickle.dumps(exc)), Transient)


@pytest.mark.parametrize(
    "cls",
    [PgferryError, ConfigError, SchemaError, ConnectError, ExtractError, TransformError, LoadError],
)
def test_terminal_classes_are_not_transient(cls: type[PgferryError]) -> None:
    assert not isinstance(cls("m"), Transient)


def test_transient_is_a_plain_marker() -> None:
    assert not issubclass(Transient, BaseException)
    assert Transient.__mro__ == (Transient, object)
