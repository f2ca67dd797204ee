"""Arrow batches of the columnar lane: to and from the user's function, and to binary COPY.

Imported only when a run takes the columnar lane (it needs ``pgferry[arrow]``). The type rules
are in :mod:`pgferry.arrow`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pgpq
import pgpq.encoders
import pgpq.schema
import pyarrow as pa
import pyarrow.compute as pc

from pgferry.arrow import TEXTUAL, Kind, base_type, carried_as_text
from pgferry.engine.plan import position_text
from pgferry.errors import ExtractError, SchemaError, TransformError
from pgferry.schema import Column

__all__ = [
    "NOTHING",
    "Encoded",
    "Encoder",
    "call_transform",
    "check_infinities",
    "output_columns",
    "plain",
    "position_of",
]

# Where ADBC's decoder leaves PostgreSQL's ±infinity: it adds the 2000→1970 epoch shift to the
# sentinels (int32/int64 extremes) without a check, so they wrap around to values below any real
# date (4713 BC is -2.4 million days) or timestamp (-2.1e17 µs): one min() finds them. The same
# wrap hits timestamps after the year 294,000 (PostgreSQL goes to 294,276), refused alike.
_DAYS_BELOW_REAL = -1_000_000_000
_US_BELOW_REAL = -(10**18)


def plain(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with extension types (``arrow.json``, ``arrow.uuid``, opaque) as their storage,
    which every Arrow consumer (Polars included) understands."""
    if not any(isinstance(f.type, pa.BaseExtensionType) for f in batch.schema):
        return batch
    arrays = [a.storage if isinstance(a.type, pa.BaseExtensionType) else a for a in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def check_infinities(batch: pa.RecordBatch, *, job: str, seq: int) -> None:
    """Refuse a batch with ``±infinity`` in a date or timestamp column (no Arrow value holds it).

    Raises:
        ExtractError: Naming the column.
    """
    for field, array in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_date32(field.type):
            storage, floor = array.cast(pa.int32()), _DAYS_BELOW_REAL
        elif pa.types.is_timestamp(field.type):
            storage, floor = array.cast(pa.int64()), _US_BELOW_REAL
        else:
            continue
        low = pc.min(storage).as_py()
        if low is not None and low < floor:
            raise ExtractError(
                f"column {field.name!r} holds infinity or -infinity (or a timestamp after "
                f"the year 294,000), which an Arrow {field.type} cannot represent; cast it to "
                "text in a source query "
                f"({field.name}::text) to carry it exactly, or use a row transform",
                job=job,
                batch=seq,
                column=field.name,
            )


def position_of(batch: pa.RecordBatch, index: Sequence[int]) -> list[str] | None:
    """The position (watermark or progress) of a source batch: its last row, as text."""
    if not index or batch.num_rows == 0:
        return None
    last = batch.num_rows - 1
    values = []
    for i in index:
        scalar = batch.column(i)[last]
        value = scalar.as_py()
        # uuid (an extension type) as its text, which the server converts back.
        values.append(str(value) if isinstance(scalar.type, pa.BaseExtensionType) else value)
    return position_text(values)


def call_transform(fn: Callable[..., Any], kind: Kind, batch: pa.RecordBatch) -> pa.Table:
    """The user's function on one batch, its result as an Arrow table.

    Raises:
        TransformError: The function raised or returned something else.
    """
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if kind == "polars":
        import polars as pl

        frame = pl.from_arrow(batch)
        try:
            out = fn(frame)
        except Exception as exc:
            raise TransformError(
                f"polars transform {name} raised {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(out, pl.LazyFrame):
            out = out.collect()
        if not isinstance(out, pl.DataFrame):
            raise TransformError(
                f"polars transform {name} returned {type(out).__name__}; expected a "
                "polars.DataFrame"
            )
        return out.to_arrow(compat_level=pl.CompatLevel.oldest())
    try:
        result = fn(batch)
    except Exception as exc:
        raise TransformError(f"arrow transform {name} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(result, pa.RecordBatch):
        return pa.Table.from_batches([result])
    if isinstance(result, pa.Table):
        return result
    raise TransformError(
        f"arrow transform {name} returned {type(result).__name__}; expected a "
        "pyarrow.RecordBatch or pyarrow.Table"
    )


_ARROW_TO_PG: list[tuple[Callable[[pa.DataType], bool], str]] = [
    (pa.types.is_boolean, "boolean"),
    (lambda t: pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t), "smallint"),
    (lambda t: pa.types.is_int32(t) or pa.types.is_uint16(t), "integer"),
    (lambda t: pa.types.is_int64(t) or pa.types.is_uint32(t), "bigint"),
    (pa.types.is_float32, "real"),
    (pa.types.is_float64, "double precision"),
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "text"),
    (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t), "bytea"),
    (pa.types.is_date32, "date"),
    (pa.types.is_time64, "time"),
]


def _pg_type_of(dtype: pa.DataType) -> str | None:
    if isinstance(dtype, pa.BaseExtensionType):
        dtype = dtype.storage_type
    if pa.types.is_timestamp(dtype):
        return "timestamp with time zone" if dtype.tz is not None else "timestamp"
    if pa.types.is_decimal(dtype):
        return f"numeric({dtype.precision},{dtype.scale})"
    for test, name in _ARROW_TO_PG:
        if test(dtype):
            return name
    return None


def output_columns(
    table: pa.Table, source: Sequence[Column], declared: dict[str, str]
) -> list[Column]:
    """Types for the transform's output columns, for creating the target table.

    Declared types win; a column named like a source column is that column (its exact type,
    ``NOT NULL`` and comment, as on the rows lane: the key becomes the primary key); the rest
    take the Arrow type's natural PostgreSQL type.

    Raises:
        SchemaError: An Arrow type without one; the message asks for ``target.columns``.
    """
    by_name = {c.name: c for c in source}
    out = []
    for field in table.schema:
        if field.name not in declared and field.name in by_name:
            out.append(by_name[field.name])
            continue
        type_name = declared.get(field.name) or _pg_type_of(field.type)
        if type_name is None:
            raise SchemaError(
                f"cannot tell the PostgreSQL type of new column {field.name!r} (Arrow type "
                f"{field.type}); declare it under target.columns",
                column=field.name,
            )
        out.append(Column(field.name, type_name))
    return out


class Encoded:
    """A transformed batch as binary COPY for the sink (:class:`~pgferry.engine.sinks.
    postgres_copy.CopyBatch`): encoded once, halves encoded only when the target refuses a row.
    """

    def __init__(self, encoder: Encoder, table: pa.Table, seq: int, chunks: list[bytes]) -> None:
        self._encoder = encoder
        self._table = table
        self._seq = seq
        self._chunks = chunks
        self.rows = table.num_rows

    def chunks(self) -> Sequence[bytes]:
        """The whole COPY stream: header, tuples, trailer."""
        return self._chunks

    def halves(self) -> tuple[Encoded, Encoded]:
        """The first and second half of the rows, encoded."""
        mid = self.rows // 2
        return (
            self._encoder.encode(self._table.slice(0, mid), self._seq),
            self._encoder.encode(self._table.slice(mid), self._seq),
        )

    def first_row(self) -> dict[str, Any]:
        """The first row as a dict (values Python cannot hold shown as text)."""
        row: dict[str, Any] = {}
        for name in self._table.column_names:
            scalar = self._table.column(name)[0]
            try:
                row[name] = scalar.as_py()
            except (ValueError, OverflowError, pa.ArrowException):
                row[name] = str(scalar)
        return row


class _Nothing:
    """A batch of no rows (the transform rejected all of them)."""

    rows = 0

    def chunks(self) -> Sequence[bytes]:
        return []

    def halves(self) -> tuple[_Nothing, _Nothing]:
        return self, self

    def first_row(self) -> dict[str, Any]:
        return {}


NOTHING = _Nothing()


# Target type → the one Arrow type written to it, with an encoder that writes its binary form.
_CANONICAL: dict[str, pa.DataType] = {
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "money": pa.int64(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
    "bytea": pa.large_binary(),
    "uuid": pa.large_binary(),
    "date": pa.date32(),
    "time without time zone": pa.time64("us"),
    "timestamp without time zone": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
}


def _is_text(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
    )


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    """Casts that cannot change a value silently (narrowing is checked by a safe cast)."""
    if src == dst:
        return True
    if pa.types.is_integer(src) and pa.types.is_integer(dst):
        return True  # a safe cast fails on overflow
    if pa.types.is_float32(src) and pa.types.is_float64(dst):
        return True
    if pa.types.is_timestamp(src) and pa.types.is_timestamp(dst):
        return (src.tz is None) == (dst.tz is None)  # a safe cast fails on truncation
    if pa.types.is_date(src) and pa.types.is_date32(dst):
        return True
    if pa.types.is_time(src) and pa.types.is_time64(dst):
        return True
    binaries = (
        pa.types.is_binary,
        pa.types.is_large_binary,
        pa.types.is_fixed_size_binary,
        pa.types.is_binary_view,
    )
    return pa.types.is_large_binary(dst) and any(t(src) for t in binaries)


class Encoder:
    """Writes Arrow tables as binary COPY for the target's columns, in the writer's order.

    Each output column is either written natively (its Arrow type matches the target column's
    type, or casts to it without any possible change) or, when it is text and the column's type
    is not, as text into a staging column that the server casts (``carried``).

    Args:
        columns: The target columns written, in order.
        types: Their types (``format_type`` text), by name.
        schema: The schema of the first transformed batch.
        job: The job, for messages.

    Raises:
        SchemaError: A column's Arrow type cannot be written exactly to its target type.
    """

    def __init__(
        self, columns: Sequence[str], types: dict[str, str], schema: pa.Schema, job: str
    ) -> None:
        self.columns = tuple(columns)
        self.job = job
        self.carried: list[str] = []
        self._targets: list[pa.DataType | None] = []
        fields = []
        for name in self.columns:
            index = schema.get_field_index(name)
            if index < 0:
                raise SchemaError(
                    f"the transform's output has no column {name!r}, which the target needs",
                    job=job,
                    column=name,
                )
            dtype = schema.field(index).type
            if isinstance(dtype, pa.BaseExtensionType):
                dtype = dtype.storage_type
            target = base_type(types[name])
            fields.append(self._plan(name, dtype, target, types[name]))
        self.schema = pa.schema(fields)
        encoders = {f.name: self._builder(f, types[f.name]) for f in self.schema}
        self._encoders = encoders

    def _plan(self, name: str, dtype: pa.DataType, target: str, shown: str) -> pa.Field:
        if target in TEXTUAL or target == "jsonb":
            if _is_text(dtype):
                self._targets.append(pa.large_string())
                return pa.field(name, pa.large_string())
        elif target in _CANONICAL:
            want = _CANONICAL[target]
            if _castable(dtype, want):
                self._targets.append(want)
                return pa.field(name, want)
            if _is_text(dtype):
                self.carried.append(name)
                self._targets.append(pa.large_string())
                return pa.field(name, pa.large_string())
        elif carried_as_text(shown) and (_is_text(dtype) or pa.types.is_decimal(dtype)):
            # A decimal is written as its exact text too (the server rounds to the column's
            # scale as for any numeric input, and refuses what does not fit).
            self.carried.append(name)
            self._targets.append(pa.large_string())
            return pa.field(name, pa.large_string())
        raise SchemaError(
            f"column {name!r}: the transform returned Arrow {dtype} for a target column of "
            f"type {shown}, which the columnar lane cannot write exactly; return "
            f"{self._advice(target)}",
            job=self.job,
            column=name,
        )

    @staticmethod
    def _advice(target: str) -> str:
        if target in _CANONICAL:
            return f"{_CANONICAL[target]} (or PostgreSQL's text form of the value)"
        return "PostgreSQL's text form of the value (as the lane reads such a column)"

    @staticmethod
    def _builder(field: pa.Field, type_name: str) -> Any:
        if base_type(type_name) == "jsonb":
            return pgpq.encoders.LargeStringEncoderBuilder.new_with_output(
                field, pgpq.schema.Jsonb()
            )
        return pgpq.ArrowToPostgresBinaryEncoder.infer_encoder(field)

    def encode(self, table: pa.Table, seq: int) -> Encoded:
        """The rows of ``table`` as binary COPY tuples.

        Raises:
            TransformError: A value does not fit its column (overflow, truncation), naming it.
        """
        arrays = []
        for name, want in zip(self.columns, self._targets, strict=True):
            column = table.column(name)
            if isinstance(column.type, pa.BaseExtensionType):
                column = pa.chunked_array(
                    [c.storage for c in column.chunks], type=column.type.storage_type
                )
            if want is not None and column.type != want:
                try:
                    column = column.cast(want, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise TransformError(
                        f"column {name!r}: a value does not fit {want}: {exc}",
                        job=self.job,
                        batch=seq,
                        column=name,
                    ) from exc
            arrays.append(column)
        out = pa.Table.from_arrays(arrays, schema=self.schema)
        # One encoder per batch: pgpq buffers tuples until about a megabyte and hands out the
        # rest only on finish(), so a shared encoder would put rows into another transaction.
        encoder = pgpq.ArrowToPostgresBinaryEncoder.new_with_encoders(self.schema, self._encoders)
        chunks = [encoder.write_header()]
        chunks += [encoder.write_batch(b) for b in out.to_batches()]
        chunks.append(encoder.finish())
        return Encoded(self, table, seq, [c for c in chunks if c])
