"""The measured halves of bench/backup.py, each run in a fresh Python process so that its RSS
is its own: `python -m bench.backup_workers KIND ARGS_JSON` prints one JSON line.

- `ours`: two `pg_backup` runs (the first measured against the tools, the second for the
  memory of a daemon that has backed up before);
- `upload`: boto3's `upload_file` of the tools' dump (s3transfer, what `aws s3 cp` uses);
- `drill`: one `restore_drill` run.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

ADMIN_DSN = os.environ.get("RUNBOOKD_TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres")
PART = 8 * 1024 * 1024
KEYS = {"aws_access_key_id": "AKIDBENCH", "aws_secret_access_key": "bench-secret"}


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class PeakRss:
    """The highest RSS seen by a thread sampling every 10 ms."""

    def __init__(self) -> None:
        self.start = rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss())

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())
        return {"rss_start": self.start, "rss_peak": self.peak}


def worker_ours(args: dict[str, Any]) -> dict[str, Any]:
    """Two backups in one process: the first pays for loading what a first S3 call needs
    (botocore's service model, asyncpg's codecs), the second is the daily run of a daemon
    that has done one before. The libraries themselves are imported before measuring."""
    import aioboto3  # noqa: F401  (imported before measuring: a daemon has them loaded)
    import aiohttp
    import asyncpg  # noqa: F401
    import botocore.session  # noqa: F401

    from daemon.core.clock import SystemClock
    from daemon.core.models import Incident
    from daemon.runtime import eventloop
    from remediations.base import RemediationContext
    from remediations.pg_backup import PgBackupConfig, PgBackupRemediation

    config = PgBackupConfig.model_validate(
        {
            "type": "pg_backup",
            "dsn": args["dsn"],
            "bucket": args["bucket"],
            "prefix": "ours/",
            "endpoint_url": args["endpoint"],
            "access_key_id": KEYS["aws_access_key_id"],
            "secret_access_key": KEYS["aws_secret_access_key"],
            "count_tables": ["User", "Task"],
            "part_size": PART,
            "versioning": "warn",
        }
    )
    remediation = PgBackupRemediation("bench", config)
    incident = Incident("bench", "bench", "bench", "info", "scheduled backup", time.time())

    async def backup() -> Any:
        async with aiohttp.ClientSession() as session:
            return await remediation.execute(RemediationContext(session, SystemClock()), incident)

    runs = []
    for _ in range(2):
        times = os.times()
        peak = PeakRss()
        started = time.perf_counter()
        result = eventloop.run(backup())
        seconds = time.perf_counter() - started
        after = os.times()
        if not result.ok:
            raise RuntimeError(result.detail)
        runs.append(
            {
                "seconds": seconds,
                "bytes": result.data["bytes"],
                "cpu_self": after.user + after.system - times.user - times.system,
                "cpu_children": after.children_user
                + after.children_system
                - times.children_user
                - times.children_system,
                **peak.stop(),
            }
        )
    return {**runs[0], "warm": runs[1]}


def worker_upload(args: dict[str, Any]) -> dict[str, Any]:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=args["endpoint"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
        **KEYS,
    )
    transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=2)
    times = os.times()
    peak = PeakRss()
    started = time.perf_counter()
    s3.upload_file(
        args["file"],
        args["bucket"],
        "tools/backup.sql.gz",
        ExtraArgs={"ServerSideEncryption": "AES256"},
        Config=transfer,
    )
    seconds = time.perf_counter() - started
    after = os.times()
    return {
        "seconds": seconds,
        "bytes": Path(args["file"]).stat().st_size,
        "cpu_self": after.user + after.system - times.user - times.system,
        **peak.stop(),
    }


def worker_drill(args: dict[str, Any]) -> dict[str, Any]:
    import aioboto3  # noqa: F401  (imported before measuring, as in worker_ours)
    import aiohttp
    import asyncpg  # noqa: F401

    from daemon.core.clock import SystemClock
    from daemon.core.models import Incident
    from daemon.runtime import eventloop
    from remediations.base import RemediationContext
    from remediations.restore_drill import RestoreDrillConfig, RestoreDrillRemediation

    config = RestoreDrillConfig.model_validate(
        {
            "type": "restore_drill",
            "dsn": ADMIN_DSN,
            "bucket": args["bucket"],
            "prefix": "ours/",
            "endpoint_url": args["endpoint"],
            "access_key_id": KEYS["aws_access_key_id"],
            "secret_access_key": KEYS["aws_secret_access_key"],
        }
    )
    drill = RestoreDrillRemediation("bench", config)
    incident = Incident("bench", "bench", "bench", "info", "restore drill", time.time())

    async def run() -> Any:
        async with aiohttp.ClientSession() as session:
            return await drill.execute(RemediationContext(session, SystemClock()), incident)

    peak = PeakRss()
    started = time.perf_counter()
    result = eventloop.run(run())
    seconds = time.perf_counter() - started
    if not result.ok:
        raise RuntimeError(result.detail)
    report = result.data
    return {
        "seconds": seconds,
        "time_to_recover": report["time_to_recover_seconds"],
        "restore": report["restore_seconds"],
        "verify": report["verify_seconds"],
        **peak.stop(),
    }


WORKERS = {"ours": worker_ours, "upload": worker_upload, "drill": worker_drill}

if __name__ == "__main__":
    kind, raw = sys.argv[1:3]
    print(json.dumps(WORKERS[kind](json.loads(raw))))
