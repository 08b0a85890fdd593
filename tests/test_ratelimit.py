"""Login and registration rate limits on real API processes with tight limits, sharing the session's Valkey.

Each test talks from its own loopback source address (127.x.y.z: the whole /8 is local on Linux), so the
per-IP budgets of different tests, and of the main API process that other test modules use, never meet.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import PASSWORD, ApiProcess, Resident, assert_problem, race, register, unique_email

ACCOUNT_LIMIT = 5
IP_LIMIT = 8
REGISTER_LIMIT = 3
WINDOW_S = 60
LIMITS = {
    "CW_LOGIN_LIMIT_PER_ACCOUNT": f"{ACCOUNT_LIMIT}/{WINDOW_S}",
    "CW_LOGIN_LIMIT_PER_IP": f"{IP_LIMIT}/{WINDOW_S}",
    "CW_REGISTER_LIMIT_PER_IP": f"{REGISTER_LIMIT}/{WINDOW_S}",
}


def _serving(work_dir: Path, *, workers: int, trust_forwarded_for: bool) -> Iterator[ApiProcess]:
    proc = ApiProcess(work_dir, workers=workers, CW_TRUST_FORWARDED_FOR=str(trust_forwarded_for).lower(), **LIMITS)
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def limited_api(work_dir: Path) -> Iterator[ApiProcess]:
    """Two workers behind one port, X-Forwarded-For not trusted (the default)."""
    yield from _serving(work_dir, workers=2, trust_forwarded_for=False)


@pytest.fixture(scope="module")
def proxied_api(work_dir: Path) -> Iterator[ApiProcess]:
    """Behind one trusted proxy: the right-most X-Forwarded-For entry, the one the proxy appended, is the client."""
    yield from _serving(work_dir, workers=1, trust_forwarded_for=True)


def fresh_ip() -> str:
    n = uuid.uuid4().int
    return f"127.{10 + n % 240}.{(n >> 8) % 256}.{1 + (n >> 16) % 254}"


def client_from(api: ApiProcess, ip: str | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=ip or fresh_ip())
    return httpx.Client(base_url=api.base_url, transport=transport, timeout=30)


def login(http: httpx.Client, account: str, password: str, **headers: str) -> httpx.Response:
    return http.post("/v1/auth/login", json={"login": account, "password": password}, headers=headers)


def login_from_fresh_ip(api: ApiProcess, account: str, password: str) -> httpx.Response:
    with client_from(api) as http:
        return login(http, account, password)


def assert_limited(response: httpx.Response) -> int:
    body = assert_problem(response, 429, "rate-limited")
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW_S
    assert body["retry_after_s"] == retry_after
    return retry_after


def test_limits_apply_across_two_worker_processes(client: httpx.Client, limited_api: ApiProcess) -> None:
    """20 concurrent wrong-password logins for one account, each from its own address so only the
    per-account limit applies: exactly 5 reach the password check, 15 are refused, and the split holds
    although both worker processes served the burst."""
    victim = register(client)
    attempts = 20
    results = race(
        attempts, lambda: client_from(limited_api), lambda http: login(http, victim.login, "wrong password!")
    )

    statuses = Counter(r.status_code for r in results)
    assert statuses == {401: ACCOUNT_LIMIT, 429: attempts - ACCOUNT_LIMIT}, statuses
    for r in results:
        if r.status_code == 401:
            assert_problem(r, 401, "invalid-credentials")
        else:
            assert_limited(r)

    # Even the right password is refused while the account is limited, from any address, in any spelling.
    assert_limited(login_from_fresh_ip(limited_api, victim.login, PASSWORD))
    assert_limited(login_from_fresh_ip(limited_api, victim.login.upper(), PASSWORD))
    assert_limited(login_from_fresh_ip(limited_api, f"  {victim.login}  ", PASSWORD))

    _login_counts_per_worker(limited_api, (ACCOUNT_LIMIT, attempts - ACCOUNT_LIMIT + 3))


def _login_counts_per_worker(api: ApiProcess, totals: tuple[int, int]) -> set[tuple[int, int]]:
    """Each worker has its own Prometheus registry, so /metrics on a new connection shows one worker's
    (401s, 429s) on /v1/auth/login. Finds two different answers that add up to the totals: both workers
    served part of the burst. (The 401 total is odd, so the two workers' answers cannot be equal.)"""
    pattern = r'cw_http_requests_total\{{method="POST",route="/v1/auth/login",status="{status}"\}} (\S+)'
    seen: set[tuple[int, int]] = set()
    for _ in range(200):
        with httpx.Client(base_url=api.base_url, timeout=10) as fresh:  # a new connection each time
            text = fresh.get("/metrics").text
        counts = []
        for status in (401, 429):
            m = re.search(pattern.format(status=status), text)
            counts.append(int(float(m.group(1))) if m else 0)
        seen.add((counts[0], counts[1]))
        if any(tuple(map(sum, zip(a, b, strict=True))) == totals for a in seen for b in seen if a != b):
            return seen
    raise AssertionError(f"one worker served the whole burst, so the test proves nothing: {seen}")


def test_per_ip_limit_spans_accounts(limited_api: ApiProcess) -> None:
    with client_from(limited_api) as http:
        statuses = [login(http, unique_email("nobody"), "wrong password!").status_code for _ in range(IP_LIMIT + 4)]
        assert statuses == [401] * IP_LIMIT + [429] * 4
        assert_limited(login(http, unique_email("nobody"), "wrong password!"))
    # Another address has its own budget.
    assert_problem(login_from_fresh_ip(limited_api, unique_email("nobody"), "wrong password!"), 401,
                   "invalid-credentials")


def test_untrusted_forwarded_for_cannot_buy_a_new_budget(limited_api: ApiProcess) -> None:
    with client_from(limited_api) as http:
        statuses = [
            login(http, unique_email("nobody"), "wrong password!", **{"X-Forwarded-For": fresh_ip()}).status_code
            for _ in range(IP_LIMIT + 3)
        ]
    assert statuses == [401] * IP_LIMIT + [429] * 3


def test_registration_is_limited_per_ip(limited_api: ApiProcess) -> None:
    with client_from(limited_api) as http:
        responses = [
            http.post("/v1/auth/register", json={"email": unique_email("reg"), "password": PASSWORD})
            for _ in range(REGISTER_LIMIT + 2)
        ]
    assert [r.status_code for r in responses] == [201] * REGISTER_LIMIT + [429] * 2
    for r in responses[REGISTER_LIMIT:]:
        assert_limited(r)
    with client_from(limited_api) as other:
        r = other.post("/v1/auth/register", json={"email": unique_email("reg"), "password": PASSWORD})
        assert r.status_code == 201, r.text


def test_successful_login_resets_the_account_counter(client: httpx.Client, limited_api: ApiProcess) -> None:
    holder: Resident = register(client)
    wrong = [login_from_fresh_ip(limited_api, holder.login, "wrong password!") for _ in range(ACCOUNT_LIMIT - 1)]
    assert [r.status_code for r in wrong] == [401] * (ACCOUNT_LIMIT - 1)
    ok = login_from_fresh_ip(limited_api, holder.login, PASSWORD)
    assert ok.status_code == 200, ok.text
    # Without the reset the very next failure would be number 6 and refused.
    again = [login_from_fresh_ip(limited_api, holder.login, "wrong password!") for _ in range(ACCOUNT_LIMIT)]
    assert [r.status_code for r in again] == [401] * ACCOUNT_LIMIT
    assert_limited(login_from_fresh_ip(limited_api, holder.login, "wrong password!"))


def test_a_failed_login_does_not_reset_the_counter(client: httpx.Client, limited_api: ApiProcess) -> None:
    holder = register(client)
    statuses = [
        login_from_fresh_ip(limited_api, holder.login, "wrong password!").status_code
        for _ in range(ACCOUNT_LIMIT + 1)
    ]
    assert statuses == [401] * ACCOUNT_LIMIT + [429]


def test_trusted_forwarded_for_gives_each_client_its_own_budget(proxied_api: ApiProcess) -> None:
    """Behind one trusted proxy the client is the address that proxy appended (the right-most entry);
    entries to its left are whatever the client sent and must not buy a fresh budget."""
    first, second = fresh_ip(), fresh_ip()
    with client_from(proxied_api) as proxy:  # one proxy address carries every client
        statuses = [
            login(proxy, unique_email("nobody"), "wrong password!", **{"X-Forwarded-For": f"{fresh_ip()}, {first}"})
            .status_code
            for _ in range(IP_LIMIT + 2)
        ]
        assert statuses == [401] * IP_LIMIT + [429] * 2
        assert_limited(login(proxy, unique_email("nobody"), "x" * 10, **{"X-Forwarded-For": first}))
        # A different client behind the same proxy is not affected.
        r = login(proxy, unique_email("nobody"), "wrong password!", **{"X-Forwarded-For": second})
        assert_problem(r, 401, "invalid-credentials")
        regs = [
            proxy.post("/v1/auth/register", json={"email": unique_email("reg"), "password": PASSWORD},
                       headers={"X-Forwarded-For": f"{fresh_ip()}, {second}"}).status_code
            for _ in range(REGISTER_LIMIT + 1)
        ]
        assert regs == [201] * REGISTER_LIMIT + [429]
