"""DataFrame columns through Veil with PySpark's `mapInPandas`: every partition opens one client,
and every Arrow batch of rows Spark hands it (spark.sql.execution.arrow.maxRecordsPerBatch rows,
10,000 by default) goes out as requests of up to `max_batch` values. Nulls stay null and are not
sent. Needs `pyspark`, `pandas` and `pyarrow` (the `spark` extra).

    from functools import partial
    from veil_client import VeilClient
    from veil_client.spark import protect_column, unprotect_column
    veil = partial(VeilClient, url, api_key=key)   # called once per partition, on the executors
    df = protect_column(df, "card", scheme="pii", client=veil)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

from .client import BatchResult, VeilClient

if TYPE_CHECKING:  # pragma: no cover - types only
    import pandas as pd
    from pyspark.sql import DataFrame

ClientFactory = Callable[[], VeilClient]


def protect_column(df: DataFrame, column: str, *, scheme: str, client: ClientFactory, output: str | None = None,
                   subject: str | None = None, context: str | None = None, on_error: str = "raise") -> DataFrame:
    """`df` with `column` (a string column) protected under `scheme`, in place or into a new
    string column `output`."""
    return transform_column(df, column, lambda c, v: c.protect(scheme, v, subject=subject, context=context),
                            client=client, output=output, on_error=on_error)


def unprotect_column(df: DataFrame, column: str, *, client: ClientFactory, scheme: str | None = None,
                     output: str | None = None, subject: str | None = None, context: str | None = None,
                     on_error: str = "raise") -> DataFrame:
    """`df` with the tokens of `column` unprotected (a token of another scheme than `scheme`, when
    given, fails as `scheme_mismatch`)."""
    return transform_column(df, column,
                            lambda c, v: c.unprotect(v, scheme=scheme, subject=subject, context=context),
                            client=client, output=output, on_error=on_error)


def rewrap_column(df: DataFrame, column: str, *, client: ClientFactory, scheme: str | None = None,
                  output: str | None = None, subject: str | None = None, context: str | None = None,
                  on_error: str = "raise") -> DataFrame:
    """`df` with the tokens of `column` rewrapped to their scheme's current key version."""
    return transform_column(df, column, lambda c, v: c.rewrap(v, scheme=scheme, subject=subject, context=context),
                            client=client, output=output, on_error=on_error)


def mask_column(df: DataFrame, column: str, *, scheme: str, client: ClientFactory, output: str | None = None,
                on_error: str = "raise") -> DataFrame:
    """`df` with `column` masked by the scheme's mask rule."""
    return transform_column(df, column, lambda c, v: c.mask(scheme, v), client=client, output=output,
                            on_error=on_error)


def transform_column(df: DataFrame, column: str, call: Callable[[VeilClient, list[Any]], BatchResult], *,
                     client: ClientFactory, output: str | None = None, on_error: str = "raise") -> DataFrame:
    """The one mapInPandas pass behind the functions above. `on_error="raise"` (default) fails
    the task, and so the job, on the first item that failed (Spark's own task retries apply);
    `"none"` writes null for it instead."""
    from pyspark.sql.types import StringType, StructField, StructType

    if on_error not in ("raise", "none"):
        raise ValueError('on_error must be "raise" or "none"')
    if column not in df.columns:
        raise ValueError(f"no column {column!r}")
    if not isinstance(df.schema[column].dataType, StringType):
        raise TypeError(f"column {column!r} is {df.schema[column].dataType.simpleString()}, not string")
    out = output or column
    if out == column:
        schema = df.schema
    elif out in df.columns:
        raise ValueError(f"output column {out!r} exists already")
    else:
        schema = StructType([*df.schema.fields, StructField(out, StringType(), True)])

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        with client() as veil:
            for pdf in batches:
                values = [v if isinstance(v, str) or not pd.isna(v) else None for v in pdf[column].tolist()]
                pdf[out] = pd.Series(call(veil, values).values(on_error), index=pdf.index, dtype=object)
                yield pdf

    return df.mapInPandas(run, schema)

