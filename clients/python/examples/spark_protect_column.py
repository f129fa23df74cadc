#!/usr/bin/env python3
"""Protect a DataFrame column through Veil with PySpark, store it, read it back and unprotect it.

    VEIL_API_KEY=veil_... python spark_protect_column.py --url https://veil.example.com \
        --scheme pii --rows 100000 --out /tmp/cards

Makes a table of `--rows` card numbers (every tenth one null), protects the `card` column with
`veil_client.spark.protect_column` (mapInPandas: one client per partition, requests of up to the
deployment's `max_batch` values), writes `id, card_token` as Parquet to OUT/protected (the
plaintext is not written), reads it back and unprotects it into OUT/round_trip
(`id, card_token, card`). Prints one JSON line with the counts and timings.

`--bench` instead times protecting the column into Spark's `noop` sink (nothing written), beside
the same pass through an identity mapInPandas (what Spark costs without Veil).

Credentials: VEIL_API_KEY (a Veil API key with a role in the scheme's `protect` and `unprotect`
lists) or VEIL_TOKEN (a JWT). On Databricks, read the key from a secret scope instead
(docs/databricks.md). Spark runs on `--master` (default local[2]) unless a session exists.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial

from pyspark.sql import DataFrame, SparkSession

from veil_client import VeilClient
from veil_client.spark import protect_column, unprotect_column

# Card numbers made from the row id, so that anyone can check a round trip without the input:
# 16 digits, every tenth row null, and one row in a thousand with non-ASCII text.
CARD_SQL = ("CASE WHEN id % 10 = 0 THEN NULL "
            "WHEN id % 1000 = 1 THEN concat('carte n° ', id, ' – ünï') "
            "ELSE concat('4', lpad(CAST(id AS STRING), 15, '0')) END")


def expected_card(i: int) -> str | None:
    """What CARD_SQL gives for row `i` (for checks outside Spark)."""
    if i % 10 == 0:
        return None
    if i % 1000 == 1:
        return f"carte n° {i} – ünï"
    return "4" + str(i).rjust(15, "0")


def cards(spark: SparkSession, rows: int, partitions: int) -> DataFrame:
    return spark.range(rows, numPartitions=partitions).selectExpr("id", f"{CARD_SQL} AS card")


def client_factory(url: str, max_batch: int | None) -> partial:
    """What each partition calls to get its client (pickled to the executors with the task)."""
    if os.environ.get("VEIL_API_KEY"):
        return partial(VeilClient, url, api_key=os.environ["VEIL_API_KEY"], max_batch=max_batch)
    return partial(VeilClient, url, token=os.environ["VEIL_TOKEN"], max_batch=max_batch)


def round_trip(spark: SparkSession, args) -> dict:
    veil = client_factory(args.url, args.max_batch)
    df = cards(spark, args.rows, args.partitions)
    t0 = time.monotonic()
    protected = protect_column(df, "card", scheme=args.scheme, client=veil, output="card_token").drop("card")
    protected.write.mode("overwrite").parquet(f"{args.out}/protected")
    t1 = time.monotonic()
    stored = spark.read.parquet(f"{args.out}/protected")
    back = unprotect_column(stored, "card_token", scheme=args.scheme, client=veil, output="card")
    back.write.mode("overwrite").parquet(f"{args.out}/round_trip")
    t2 = time.monotonic()
    return {"rows": args.rows, "partitions": args.partitions, "protect_seconds": round(t1 - t0, 3),
            "unprotect_seconds": round(t2 - t1, 3)}


def bench(spark: SparkSession, args) -> dict:
    """Seconds to protect the column into the noop sink, and the same pass without Veil."""
    veil = client_factory(args.url, args.max_batch)
    df = cards(spark, args.rows, args.partitions)

    def identity(batches):
        yield from batches

    # a small pass first, so that both timed passes find the Python workers started
    warm = spark.range(1000, numPartitions=args.partitions)
    warm.mapInPandas(identity, warm.schema).write.format("noop").mode("overwrite").save()
    out = {"rows": args.rows, "partitions": args.partitions}
    for label, frame in (("identity_seconds", df.mapInPandas(identity, df.schema)),
                         ("protect_seconds", protect_column(df, "card", scheme=args.scheme, client=veil))):
        t0 = time.monotonic()
        frame.write.format("noop").mode("overwrite").save()
        out[label] = round(time.monotonic() - t0, 3)
    out["rows_per_second"] = round(args.rows / out["protect_seconds"], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="Veil's base URL")
    ap.add_argument("--scheme", required=True)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--max-batch", type=int, default=None, help="values per request (default: the deployment's)")
    ap.add_argument("--out", help="where the Parquet tables go (the round trip)")
    ap.add_argument("--bench", action="store_true", help="time the protect pass only (noop sink)")
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()
    if not args.bench and not args.out:
        ap.error("--out is needed unless --bench")
    spark = (SparkSession.builder.master(args.master).appName("veil-protect-column")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    try:
        print(json.dumps(bench(spark, args) if args.bench else round_trip(spark, args)), flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
