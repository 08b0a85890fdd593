"""One real PostgreSQL and one real Valkey per test session (embedded unless DATABASE_URL / REDIS_URL are
set), migrated once; one API process for HTTP tests; a connection pool on the pytest loop for service tests.

Servers start in `pytest_configure`, before test modules import application code, because
`piccolo_conf` reads DATABASE_URL when it is first imported.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

_SESSION: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    work = Path(tempfile.mkdtemp(prefix="carbon-wallet-tests-"))
    from api.local.servers import LocalServers

    servers = LocalServers(work / "data", ephemeral=True)
    urls = servers.start()
    os.environ.update(urls)
    os.environ.update({
        "CW_ENV": "test",
        "CW_DATA_DIR": str(work / "data"),
        "CW_ACCESS_LOG": "false",
        "CW_REGISTER_LIMIT_PER_IP": "100000/3600",
        "CW_LOGIN_LIMIT_PER_IP": "100000/300",
        "CW_LOGIN_LIMIT_PER_ACCOUNT": "1000/300",
        "CW_ENERGY_RIPEN_S": "0",  # balls are ripe at once; tests of ripening set the policy themselves
    })
    _SESSION.update(servers=servers, work=work)
    from api.migrate import migrate

    asyncio.run(migrate(urls["DATABASE_URL"]))


def pytest_unconfigure(config: pytest.Config) -> None:
    servers = _SESSION.pop("servers", None)
    if servers is not None:
        servers.stop()  # type: ignore[attr-defined]
    work = _SESSION.pop("work", None)
    if isinstance(work, Path) and not os.environ.get("CW_KEEP_TEST_DATA"):
        # A session's databases, logs and API processes' files: gigabytes after a few runs if left behind.
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def work_dir() -> Path:
    path = _SESSION["work"]
    assert isinstance(path, Path)
    return path


@pytest.fixture(scope="session")
def api_process(work_dir: Path) -> Iterator[object]:
    from tests.support import ApiProcess

    proc = ApiProcess(work_dir).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def base_url(api_process: object) -> str:
    return api_process.base_url  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


@pytest.fixture
def resident(client: httpx.Client) -> object:
    from tests.support import register

    return register(client)


@pytest.fixture(scope="session")
async def db() -> AsyncIterator[object]:
    """A pool on the pytest event loop, for service-level tests (the API process has its own)."""
    from wallet.db import close_pool, engine, start_pool

    await start_pool(os.environ["DATABASE_URL"], size_min=1, size_max=10)
    yield engine()
    await close_pool()


@pytest.fixture(scope="session")
def settings() -> object:
    from api.settings import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def passwords(settings: object) -> object:
    from wallet.holders.passwords import Passwords

    return Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def operator(client: httpx.Client, db: object) -> object:
    """A resident with the operator role (granted the way the CLI does it)."""
    import uuid

    from tests.support import register
    from wallet.holders.roles import grant_role

    resident = register(client)
    await grant_role(uuid.UUID(resident.holder_id), "operator")
    return resident
