"""`python -m bench.backup [--tasks N] [--trials N] [--drills N]`: pg_backup and restore_drill
against the standard tools doing the same work, side by side in one run, and the memory they
need (bench/README.md, "Backups").

The same database is backed up into the same S3 server (moto, a separate process on
127.0.0.1) by:

- **runbookd**: the `pg_backup` remediation, in a worker process of its own: pg_dump's
  output streamed into a multipart upload (8 MiB parts, 2 in flight), hashed on the way;
- **the tools**: `pg_dump | gzip -6 > file`, then the file uploaded by boto3's managed
  transfer (s3transfer, what `aws s3 cp` uses) with the same part size and concurrency, in a
  worker too. Its time is the dump plus the upload.

Both dump plain SQL at gzip level 6. Then restore_drill against the procedure by hand
(download, `gunzip -c | psql` into a scratch database, counts). Each worker samples its own
RSS every 10 ms (bench/backup_workers.py). Trials alternate between the two. The database
(~800 MiB by default: "User" and "Task" rows with text) is created for the run and dropped
after it, as are the temp dir, the S3 server, everything uploaded and the scratch databases.
Results: a table on stdout and JSON in bench/results/backup-<UTC timestamp>.json.

Needs the PostgreSQL server of RUNBOOKD_TEST_PG_DSN (default root@127.0.0.1:5432), pg_dump,
psql and gzip.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from bench.backup_workers import ADMIN_DSN, KEYS, PART
from bench.procs import HOST, Processes, free_port, wait_http

DATABASE = "runbookd_bench_backup"
RESULTS = Path(__file__).resolve().parent / "results"
TOOLS = {name: shutil.which(name) or name for name in ("psql", "pg_dump", "gzip")}

SCHEMA = """
CREATE TABLE "User" (id text PRIMARY KEY, email text NOT NULL, name text,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE "Task" (id text PRIMARY KEY, title text NOT NULL, description text,
  done boolean NOT NULL DEFAULT false, "userId" text NOT NULL,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
INSERT INTO "User" (id, email, name)
  SELECT 'u' || g, 'user' || g || '@example.com', 'User ' || g
  FROM generate_series(1, {users}) g;
INSERT INTO "Task" (id, title, description, done, "userId")
  SELECT 't' || g, 'Task ' || g || ' ' || md5(g::text),
    'Steps: ' || md5(random()::text) || ' then ' || md5(random()::text) || '; owner notes '
      || repeat('follow up with the team ', 1 + g % 4),
    g % 3 = 0, 'u' || (1 + g % {users})
  FROM generate_series(1, {tasks}) g;
CREATE INDEX ON "Task" ("userId");
"""


def dsn_for(database: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


def psql(dsn: str, sql: str) -> str:
    run = subprocess.run(
        [TOOLS["psql"], "--no-psqlrc", "-qAt", "-v", "ON_ERROR_STOP=1", f"--dbname={dsn}"],
        input=sql.encode(),
        capture_output=True,
        check=True,
        timeout=3600,
    )
    return run.stdout.decode().strip()


def worker(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run a worker in a fresh Python process: its RSS is its own."""
    argv = [sys.executable, "-m", "bench.backup_workers", kind, json.dumps(args)]
    out = subprocess.run(argv, capture_output=True, check=False, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} worker failed: {out.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.decode().splitlines()[-1])
    return result


# --- the standard tools ----------------------------------------------------------------------


def dump_with_tools(dsn: str, path: Path) -> dict[str, Any]:
    """`pg_dump | gzip -6 > path`: two processes, as a cron script runs them."""
    started = time.perf_counter()
    with path.open("wb") as out:
        dump = subprocess.Popen([TOOLS["pg_dump"], f"--dbname={dsn}"], stdout=subprocess.PIPE)
        gzip = subprocess.Popen([TOOLS["gzip"], "-6"], stdin=dump.stdout, stdout=out)
        assert dump.stdout is not None
        dump.stdout.close()  # gzip holds the pipe now
        if gzip.wait(timeout=3600) != 0 or dump.wait(timeout=60) != 0:
            raise RuntimeError("pg_dump | gzip failed")
    return {"seconds": time.perf_counter() - started, "bytes": path.stat().st_size}


def drill_with_tools(s3: Any, bucket: str, key: str, workdir: Path) -> dict[str, Any]:
    """The Test Recovery Procedure by hand: download the backup, restore it into a scratch
    database with `gunzip -c | psql`, count the rows of "User" and "Task", then drop it."""
    from boto3.s3.transfer import TransferConfig

    file, scratch = workdir / "restore.sql.gz", "test_recovery_db_bench_tools"
    started = time.perf_counter()
    transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=2)
    s3.download_file(bucket, key, str(file), Config=transfer)
    downloaded = time.perf_counter()
    psql(ADMIN_DSN, f'CREATE DATABASE "{scratch}" TEMPLATE template0')
    try:
        gunzip = subprocess.Popen([TOOLS["gzip"], "-dc", str(file)], stdout=subprocess.PIPE)
        restore = subprocess.Popen(
            [
                TOOLS["psql"],
                "--no-psqlrc",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                f"--dbname={dsn_for(scratch)}",
            ],
            stdin=gunzip.stdout,
            stdout=subprocess.DEVNULL,
        )
        assert gunzip.stdout is not None
        gunzip.stdout.close()
        if restore.wait(timeout=3600) != 0 or gunzip.wait(timeout=60) != 0:
            raise RuntimeError("gunzip | psql failed")
        psql(dsn_for(scratch), 'SELECT count(*) FROM "User"; SELECT count(*) FROM "Task"')
        finished = time.perf_counter()
    finally:
        psql(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        file.unlink(missing_ok=True)
    return {"seconds": finished - started, "download": downloaded - started}


# --- the run -----------------------------------------------------------------------------------


def run(tasks: int, trials: int, drills: int) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    workdir = Path(tempfile.mkdtemp(prefix="runbookd-bench-backup-"))
    procs = Processes(workdir)
    dsn = dsn_for(DATABASE)
    try:
        port = free_port()
        moto = procs.spawn(
            "moto", [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
        )
        endpoint = f"http://{HOST}:{port}"
        wait_http(f"{endpoint}/moto-api/", moto, 60)
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
            **KEYS,
        )
        s3.create_bucket(Bucket="bench-backups")

        psql(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{DATABASE}"; CREATE DATABASE "{DATABASE}"')
        started = time.perf_counter()
        psql(dsn, SCHEMA.format(users=max(1, tasks // 10), tasks=tasks))
        size = int(psql(dsn, "SELECT pg_database_size(current_database())"))
        print(
            f"database: {size / 2**20:.0f} MiB, made in {time.perf_counter() - started:.0f}s",
            file=sys.stderr,
        )

        args = {"dsn": dsn, "bucket": "bench-backups", "endpoint": endpoint}
        ours, tools = [], []
        for trial in range(trials):
            ours.append(worker("ours", args))
            file = workdir / "backup.sql.gz"
            dumped = dump_with_tools(dsn, file)
            uploaded = worker("upload", args | {"file": str(file)})
            tools.append(
                {
                    "dump": dumped,
                    "upload": uploaded,
                    "seconds": dumped["seconds"] + uploaded["seconds"],
                }
            )
            file.unlink()
            print(
                f"trial {trial + 1}: runbookd {ours[-1]['seconds']:.1f}s, "
                f"tools {tools[-1]['seconds']:.1f}s",
                file=sys.stderr,
            )
        drilled, by_hand = [], []
        for trial in range(drills):
            drilled.append(worker("drill", args))
            newest = s3.list_objects_v2(Bucket="bench-backups", Prefix="ours/")["Contents"]
            key = max(obj["Key"] for obj in newest if obj["Key"].endswith(".sql.gz"))
            by_hand.append(drill_with_tools(s3, "bench-backups", key, workdir))
            print(
                f"drill {trial + 1}: runbookd {drilled[-1]['time_to_recover']:.1f}s, "
                f"tools {by_hand[-1]['seconds']:.1f}s",
                file=sys.stderr,
            )
        return {
            "database_bytes": size,
            "tasks": tasks,
            "ours": ours,
            "tools": tools,
            "drills": drilled,
            "drills_by_hand": by_hand,
            "load": os.getloadavg(),
        }
    finally:
        procs.stop_all()
        subprocess.run(
            [
                TOOLS["psql"],
                "--no-psqlrc",
                "-q",
                f"--dbname={ADMIN_DSN}",
                "-c",
                f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)',
            ],
            check=False,
        )
        shutil.rmtree(workdir, ignore_errors=True)


def table(results: dict[str, Any]) -> str:
    ours, tools = results["ours"], results["tools"]
    mib = 2**20
    gz = median(o["bytes"] for o in ours)
    t_ours = median(o["seconds"] for o in ours)
    t_tools = median(t["seconds"] for t in tools)
    t_dump = median(t["dump"]["seconds"] for t in tools)
    t_up = median(t["upload"]["seconds"] for t in tools)
    growth_ours = median(o["rss_peak"] - o["rss_start"] for o in ours)
    growth_warm = median(o["warm"]["rss_peak"] - o["warm"]["rss_start"] for o in ours)
    t_warm = median(o["warm"]["seconds"] for o in ours)
    growth_up = median(t["upload"]["rss_peak"] - t["upload"]["rss_start"] for t in tools)
    raw = results["database_bytes"]
    rows = [
        ("database", f"{raw / mib:.0f} MiB; backup {gz / mib:.0f} MiB gzipped", ""),
        (
            "runbookd pg_backup (dump + upload, streamed)",
            f"{t_ours:.1f} s",
            f"{raw / mib / t_ours:.1f} MiB/s of database",
        ),
        (
            "pg_dump \\| gzip > file, then upload",
            f"{t_tools:.1f} s",
            f"dump {t_dump:.1f} s + upload {t_up:.1f} s",
        ),
        ("throughput, runbookd / tools", f"{t_tools / t_ours:.2f}x", "target >= 0.9x"),
        ("runbookd, a second backup in the same process", f"{t_warm:.1f} s", ""),
        (
            "RSS growth, runbookd, first backup",
            f"{growth_ours / mib:.1f} MiB",
            f"peak {median(o['rss_peak'] for o in ours) / mib:.0f} MiB; target <= 64 MiB",
        ),
        ("RSS growth, runbookd, second backup", f"{growth_warm / mib:.1f} MiB", ""),
        ("RSS growth, boto3 upload_file", f"{growth_up / mib:.1f} MiB", ""),
        (
            "CPU, runbookd process",
            f"{median(o['cpu_self'] for o in ours):.1f} s",
            f"children (pg_dump) {median(o['cpu_children'] for o in ours):.1f} s",
        ),
    ]
    if results["drills"]:
        ttr = median(d["time_to_recover"] for d in results["drills"])
        by_hand = median(d["seconds"] for d in results["drills_by_hand"])
        drill_growth = median(d["rss_peak"] - d["rss_start"] for d in results["drills"])
        rows += [
            ("restore drill, runbookd (time to recover)", f"{ttr:.1f} s", "streamed, verified"),
            ("download, then gunzip -c \\| psql, then counts", f"{by_hand:.1f} s", ""),
            ("drill time, runbookd / by hand", f"{ttr / by_hand:.2f}x", "target <= 1.1x"),
            ("RSS growth, runbookd drill", f"{drill_growth / mib:.1f} MiB", ""),
        ]
    lines = ["| | | |", "|---|--:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2_500_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--drills", type=int, default=1)
    args = parser.parse_args()
    results = run(args.tasks, args.trials, args.drills)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / f"backup-{stamp}.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
