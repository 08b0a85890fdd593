"""`make run`: embedded servers if needed, migrations, demo data, then the API and the worker, until Ctrl-C.

Every process started here is stopped here, in reverse order, on SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from api.local.servers import LocalServers
from wallet.sealing import SecretBox

__all__ = ["die_with_parent", "run"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: ask the kernel to send SIGTERM when our parent dies, so killing `make` (or this supervisor,
    even with SIGKILL) leaves no orphan processes behind. Elsewhere this is a no-op."""
    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _free_port(host: str, preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind((host, preferred))
            return preferred
        except OSError:
            probe.bind((host, 0))
            return probe.getsockname()[1]


def _secret_box() -> SecretBox:
    """The box that seals demo partners' webhook secrets, with the key the API will use."""
    from api.settings import resolve_data_key

    env = dict(os.environ)
    data_dir = Path(env.get("CW_DATA_DIR") or Path(__file__).resolve().parents[2] / ".data").resolve()
    return SecretBox(resolve_data_key(env, env.get("CW_ENV") == "production", data_dir))


async def _prepare(database_url: str, seed: bool) -> int:
    from api.demo import seed_demo
    from api.migrate import migrate
    from wallet.db import close_pool, start_pool
    from wallet.holders.passwords import ARGON2_MEMORY_KIB_DEFAULT, ARGON2_TIME_COST_DEFAULT, Passwords

    await migrate(database_url)
    if not seed:
        return 0
    box = _secret_box()
    await start_pool(database_url, size_min=1, size_max=4)
    try:
        return await seed_demo(Passwords(ARGON2_TIME_COST_DEFAULT, ARGON2_MEMORY_KIB_DEFAULT), box)
    finally:
        await close_pool()


def run(*, host: str, port: int, web_workers: int, seed: bool) -> int:
    from api.demo import DEMO_CODE_CHALLENGE

    root = Path(__file__).resolve().parents[2]
    data_dir = Path(os.environ.get("CW_DATA_DIR") or root / ".data").resolve()
    servers = LocalServers(data_dir)
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            print(f"\nstopping ({signal.Signals(signum).name}) …", flush=True)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    die_with_parent()
    try:
        started = time.perf_counter()
        urls = servers.start()
        os.environ.update(urls)
        os.environ.setdefault("CW_DATA_DIR", str(data_dir))
        created = asyncio.run(_prepare(urls["DATABASE_URL"], seed))
        port = _free_port(host, port)
        python = sys.executable
        children.append(
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "api.app:create_app",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--workers",
                    str(web_workers),
                    "--no-access-log",
                    "--timeout-graceful-shutdown",
                    "5",
                ],
                preexec_fn=die_with_parent,
            )
        )
        children.append(
            subprocess.Popen([python, "-m", "arq", "api.worker.WorkerSettings"], preexec_fn=die_with_parent)
        )
        base = f"http://{host if host != '0.0.0.0' else '127.0.0.1'}:{port}"  # noqa: S104 - display only
        print(
            f"\nCarbon Wallet is starting ({time.perf_counter() - started:.1f}s to servers and migrations; "
            f"{created} demo holders created).\n"
            f"  API docs     {base}/schema\n"
            f"  Swagger UI   {base}/schema/swagger\n"
            f"  health       {base}/health\n"
            f"  ready        {base}/ready\n"
            f"  metrics      {base}/metrics\n"
            f"  live stream  {base}/v1/me/stream (Bearer token; pushes appear in this log as \"push\" lines)\n"
            f"  public pages {base}/ (cities, teams, partners) and the carbon market's lots at {base}/lots\n"
            + (
                "  demo login   lin@demo.carbon-wallet.dev / green-demo-2026 (operator: ops@demo.carbon-wallet.dev)\n"
                f"  link a demo partner  {base}/oauth/authorize?response_type=code&client_id=demo-food-delivery"
                f"&code_challenge={DEMO_CODE_CHALLENGE}&code_challenge_method=S256"
                "&state=demo (README: For partners)\n"
                if seed
                else ""
            )
            + f"  data folder  {data_dir}\n"
            + "Press Ctrl-C to stop everything.\n",
            flush=True,
        )
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    print(f"a child process exited with {child.returncode}; stopping", flush=True)
                    stopping = True
            time.sleep(0.2)
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in reversed(children):
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        servers.stop()
        print("stopped.", flush=True)
