"""`make run`'s supervisor as a newcomer meets it: it starts its own PostgreSQL and Valkey, prints where
to look, keeps data across a restart, seeds demo data once, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.demo import DEMO_HOLDERS, DEMO_PASSWORD
from tests.support import PASSWORD, ROOT, free_port, unique_email, wait_until

pytestmark = pytest.mark.slow


def _processes_using(folder: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(folder) in cmdline or cwd.startswith(str(folder)):
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


class Run:
    def __init__(self, data_dir: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        env.update(CW_DATA_DIR=str(data_dir), CW_ENV="local")
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "run", "--port", str(free_port())],
            cwd=ROOT,
            env=env,
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.base = ""

        def ready() -> bool:
            m = re.search(r"http://127\.0\.0\.1:(\d+)/schema", log.read_text(errors="replace"))
            if not m:
                return False
            self.base = f"http://127.0.0.1:{m.group(1)}"
            try:
                return httpx.get(self.base + "/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 90, log, interval_s=0.3)

    def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the whole group
        return self.proc.wait(60)


def test_run_serves_keeps_data_and_stops_cleanly(work_dir: Path) -> None:
    data_dir = work_dir / "make-run-data"
    first = Run(data_dir, work_dir / "make-run-1.log")
    try:
        text = first.log.read_text()
        for shown in ("/schema", "/health", "/ready"):
            assert shown in text
        demo = DEMO_HOLDERS[0]
        login = httpx.post(first.base + "/v1/auth/login", json={"login": demo.login, "password": DEMO_PASSWORD})
        assert login.status_code == 200, login.text
        lots = httpx.get(first.base + "/v1/market/lots").json()
        assert sorted(lot["state"] for lot in lots) == ["open", "settled"], "the demo market: one lot sold, one open"
        statement = httpx.get(first.base + "/v1/me/market",
                              headers={"Authorization": f"Bearer {login.json()['access_token']}"}).json()
        assert statement["consent"]["opted_in"] and statement["lots"], statement
        email = unique_email("restart")
        assert (
            httpx.post(first.base + "/v1/auth/register", json={"email": email, "password": PASSWORD}).status_code == 201
        )
    finally:
        code = first.ctrl_c()
    assert code == 0, first.log.read_text()[-2000:]
    time.sleep(0.5)
    assert _processes_using(data_dir) == [], "Ctrl-C must stop every process it started"

    second = Run(data_dir, work_dir / "make-run-2.log")
    try:
        assert "0 demo holders created" in second.log.read_text(), "demo data loads once"
        assert len(httpx.get(second.base + "/v1/market/lots").json()) == 2, "the demo market is made once"
        again = httpx.post(second.base + "/v1/auth/login", json={"login": email, "password": PASSWORD})
        assert again.status_code == 200, "a restart keeps everything"
    finally:
        assert second.ctrl_c() == 0
    time.sleep(0.5)
    assert _processes_using(data_dir) == []
