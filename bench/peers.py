"""Starting the processes under test, each from a config written into the run's temp dir.

nginx-light (the target), Prometheus, blackbox_exporter and Alertmanager run as BENCH-ANCHORS.md
describes; runbookd runs as `.venv/bin/runbookd run --config <generated>`; the Python workers
(floor, alert generator, faulty target) run as `python -m bench.<module>`. All on 127.0.0.1.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from bench.procs import HOST, BenchError, Proc, Processes, free_port, wait_http

REPO = Path(__file__).resolve().parent.parent
RUNBOOKD = Path(sys.executable).parent / "runbookd"
STARTUP_TIMEOUT = 60.0

# What the target serves: a health document and a small Prometheus exposition (12 series).
HEALTH_BODY = '{"status":"ok"}'
METRICS_BODY = "".join(
    [
        "# TYPE app_requests_total counter\n",
        *(
            f'app_requests_total{{code="{code}",method="{m}"}} {n}\n'
            for code, n in (("200", 12345), ("500", 12))
            for m in ("GET", "POST")
        ),
        "# TYPE app_request_duration_seconds histogram\n",
        *(
            f'app_request_duration_seconds_bucket{{le="{le}"}} {n}\n'
            for le, n in (("0.1", 10000), ("0.5", 12000), ("+Inf", 12357))
        ),
        "app_request_duration_seconds_sum 1234.5\n",
        "app_request_duration_seconds_count 12357\n",
        "# TYPE app_up gauge\napp_up 1\n",
        '# TYPE app_info gauge\napp_info{version="1.0"} 1\n',
    ]
)


def require(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        raise BenchError(
            f"not installed: {', '.join(missing)} (bench/setup.sh installs them with apt-get)"
        )


@dataclass
class Server:
    proc: Proc
    port: int
    ready_s: float = 0.0  # from spawn to ready

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


def _nginx_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def nginx_access_log(tmp: Path) -> Path:
    return tmp / "nginx" / "access.log"


def start_nginx(procs: Processes, tmp: Path, workers: int = 1) -> Server:
    """nginx-light, `workers` workers (one keeps up to 5,000 checks/s), in the foreground;
    /health (JSON) and /metrics."""
    require("nginx")
    port = free_port()
    root = tmp / "nginx"
    root.mkdir(exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
worker_processes {workers};
worker_rlimit_nofile 40000;
error_log {root}/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 32768; }}
http {{
    # Requests with ?c=N (a check or the floor) are logged with their arrival time, for the
    # lateness seen by the target (bench/polling.py); buffered, flushed every second.
    map $arg_c $bench_logged {{ "" 0; default 1; }}
    log_format bench '$msec $arg_c';
    access_log {root}/access.log bench buffer=256k flush=1s if=$bench_logged;
    client_body_temp_path {root}/body;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen {HOST}:{port} backlog=4096;
        location = /health {{
            default_type application/json;
            return 200 {_nginx_string(HEALTH_BODY)};
        }}
        location = /metrics {{
            default_type "text/plain; version=0.0.4";
            return 200 {_nginx_string(METRICS_BODY)};
        }}
    }}
}}
"""
    )
    proc = procs.spawn("nginx", ["nginx", "-p", str(root), "-c", str(conf), "-g", "daemon off;"])
    server = Server(proc, port)
    wait_http(f"{server.url}/health", proc, 10)
    return server


def start_prometheus(procs: Processes, tmp: Path, target_port: int, n_targets: int) -> Server:
    """Prometheus scraping `n_targets` distinct targets (one address, a label each) at 1 s."""
    require("prometheus")
    port = free_port()
    root = tmp / f"prometheus-{n_targets}"
    root.mkdir()
    targets = [
        {"targets": [f"{HOST}:{target_port}"], "labels": {"target": f"t{i:05d}"}}
        for i in range(n_targets)
    ]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1m"},
        "scrape_configs": [{"job_name": "bench", "static_configs": targets}],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = procs.spawn(
        "prometheus",
        [
            "prometheus",
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ],
    )
    server = Server(proc, port)
    wait_http(f"{server.url}/-/ready", proc, STARTUP_TIMEOUT)
    return server


def start_blackbox(procs: Processes, tmp: Path) -> Server:
    require("prometheus-blackbox-exporter")
    port = free_port()
    root = tmp / "blackbox"
    root.mkdir()
    config = {"modules": {"http_2xx": {"prober": "http", "timeout": "5s"}}}
    (root / "blackbox.yml").write_text(yaml.safe_dump(config))
    proc = procs.spawn(
        "blackbox",
        [
            "prometheus-blackbox-exporter",
            f"--config.file={root / 'blackbox.yml'}",
            f"--web.listen-address={HOST}:{port}",
            "--log.level=warn",
        ],
    )
    server = Server(proc, port)
    wait_http(f"{server.url}/metrics", proc, STARTUP_TIMEOUT)
    return server


def start_alertmanager(procs: Processes, tmp: Path, name: str) -> Server:
    """Alertmanager with clustering off, a null receiver and a fresh storage dir."""
    require("prometheus-alertmanager")
    port = free_port()
    root = tmp / name
    root.mkdir()
    config = {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}
    (root / "alertmanager.yml").write_text(yaml.safe_dump(config))
    proc = procs.spawn(
        name,
        [
            "prometheus-alertmanager",
            f"--config.file={root / 'alertmanager.yml'}",
            f"--storage.path={root / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
    )
    server = Server(proc, port)
    wait_http(f"{server.url}/-/ready", proc, STARTUP_TIMEOUT)
    return server


# -- runbookd ---------------------------------------------------------------------------------


def api_settings() -> dict[str, Any]:
    """`runbookd.api.rate_limit` set out of the way, if this runbookd has one.

    The API's rate limiter (per caller, default 50/s, burst 200) would otherwise throttle the
    load generator and the harness's own /readyz and /metrics polling. Its shape is read from
    DaemonSettings at run time: every numeric field of the rate limit model is set to 1e6.
    """
    from daemon.config.settings import DaemonSettings

    api = DaemonSettings.model_fields.get("api")
    api_model = api.annotation if api is not None else None
    if not (isinstance(api_model, type) and issubclass(api_model, BaseModel)):
        return {}
    limit = api_model.model_fields.get("rate_limit")
    limit_model = limit.annotation if limit is not None else None
    if not (isinstance(limit_model, type) and issubclass(limit_model, BaseModel)):
        return {}
    values = {
        name: 1_000_000 if field.annotation is int else 1_000_000.0
        for name, field in limit_model.model_fields.items()
        if field.annotation in (int, float)
    }
    settings = {"api": {"rate_limit": values}}
    DaemonSettings.model_validate(settings)  # a shape we misread fails loudly here
    return settings


# BENCH_STORE=postgres: every daemon on a fresh PostgreSQL database of its own (created
# through BENCH_PG_ADMIN_DSN), so the same scenarios measure the PostgreSQL store beside the
# SQLite default.
STORE = os.environ.get("BENCH_STORE", "sqlite")
PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://root@127.0.0.1:5432/postgres")


def store_settings(state_dir: Path) -> dict[str, Any]:
    """`runbookd.store` for a fresh daemon whose state goes to `state_dir`."""
    if STORE == "sqlite":
        return {}
    if STORE != "postgres":
        raise BenchError(f"BENCH_STORE must be sqlite or postgres, not {STORE!r}")
    import asyncio

    import asyncpg

    name = f"runbookd_bench_{state_dir.name.replace('-', '_')}_{os.getpid()}"

    async def admin(*statements: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    asyncio.run(admin(drop, f'CREATE DATABASE "{name}"'))
    atexit.register(lambda: asyncio.run(admin(drop)))  # after the run, its daemons stopped
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    return {"store": {"type": "postgres", "dsn": f"{base}/{name}"}}


def runbookd_config(
    state_dir: Path,
    port: int,
    *,
    checks: dict[str, Any] | None = None,
    rules: dict[str, Any] | None = None,
    remediations: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    daemon: dict[str, Any] = {
        "listen": f"{HOST}:{port}",
        "state_dir": str(state_dir),
        **api_settings(),
        **store_settings(state_dir),
        **(settings or {}),
    }
    return {
        "runbookd": daemon,
        "checks": checks or {},
        "rules": rules or {},
        "remediations": remediations or {},
    }


def http_checks(
    url: str, n: int, *, interval: str = "1s", jitter: float | None = None
) -> dict[str, Any]:
    """`n` http checks with distinct names, each on its own query string of `url`."""
    checks: dict[str, Any] = {}
    for i in range(n):
        check: dict[str, Any] = {
            "type": "http",
            "url": f"{url}?c={i}",
            "interval": interval,
            "timeout": "2s",
        }
        if jitter is not None:
            check["jitter"] = jitter
        checks[f"web_{i:05d}"] = check
    return checks


def write_runbookd_config(tmp: Path, name: str, config: dict[str, Any]) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def runbookd_env() -> dict[str, str]:
    """The daemon as installed: bytecode cached (`compile_sources`), not compiled at each
    start as under PYTHONDONTWRITEBYTECODE, which development shells often set."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_sources() -> None:
    """Write the project's bytecode once, as `pip install` does for a wheel's modules."""
    packages = [str(REPO / p) for p in ("daemon", "checks", "remediations")]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *packages],
        env=runbookd_env(),
        check=True,
        timeout=120,
    )


def spawn_runbookd(procs: Processes, name: str, config_path: Path) -> Proc:
    argv = [str(RUNBOOKD), "run", "--config", str(config_path)]
    return procs.spawn(name, argv, cwd=REPO, env=runbookd_env())


def start_runbookd(procs: Processes, tmp: Path, name: str, config: dict[str, Any]) -> Server:
    """Write the config, start the daemon, wait for /readyz (started, checks scheduled)."""
    path = write_runbookd_config(tmp, name, config)
    port = int(config["runbookd"]["listen"].rsplit(":", 1)[1])
    proc = spawn_runbookd(procs, name, path)
    server = Server(proc, port)
    server.ready_s = wait_http(f"{server.url}/readyz", proc, STARTUP_TIMEOUT)
    return server


def start_worker(procs: Processes, name: str, module: str, *args: str) -> Proc:
    return procs.spawn(name, [sys.executable, "-m", f"bench.{module}", *args], cwd=REPO, pipes=True)


def start_python_server(procs: Processes, name: str, module: str, *args: str) -> Proc:
    return procs.spawn(name, [sys.executable, "-m", f"bench.{module}", *args], cwd=REPO)
