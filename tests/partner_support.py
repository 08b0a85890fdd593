"""Helpers for partner and OAuth tests: an operator, partners registered through the admin API, and a
resident's browser going through login and consent the way a phone's web view would."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.support import Resident
from wallet.partners.signatures import sign

REDIRECT_URI = "https://partner.example/oauth/callback"
ALL_SCOPES = ["activities:write", "book:read", "profile:read"]
BEHAVIOURS = ["no_disposable_cutlery", "clean_plate", "parcel_box_reuse"]


def new_verifier() -> str:
    return secrets.token_urlsafe(48)[:64]


def challenge_of(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class Partner:
    id: str
    client_id: str
    client_secret: str | None
    webhook_secret: str
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def basic(self) -> tuple[str, str]:
        assert self.client_secret is not None
        return (self.client_id, self.client_secret)


def create_partner(operator: Resident, **overrides: Any) -> Partner:
    body = {
        "name": f"测试平台 {uuid.uuid4().hex[:6]}",
        "name_en": "Test Platform",
        "kind": "food_delivery",
        "redirect_uris": [REDIRECT_URI],
        "allowed_scopes": ALL_SCOPES,
        "allowed_behaviours": BEHAVIOURS,
        **overrides,
    }
    r = operator.post("/v1/admin/partners", json=body)
    assert r.status_code == 201, r.text
    data = r.json()
    return Partner(data["partner"]["id"], data["partner"]["client_id"], data["client_secret"],
                   data["webhook_secret"], data["partner"])


def authorize_params(partner: Partner, verifier: str, **overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": partner.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": " ".join(ALL_SCOPES),
        "state": "st-" + uuid.uuid4().hex[:8],
        "code_challenge": challenge_of(verifier),
        "code_challenge_method": "S256",
        **overrides,
    }
    return {k: v for k, v in params.items() if v is not None}


class Browser:
    """A resident's browser: keeps cookies, never follows redirects, so each step can be checked."""

    def __init__(self, base_url: str, resident: Resident, language: str = "zh-CN") -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False,
                                 headers={"Accept-Language": language})
        self.resident = resident

    def close(self) -> None:
        self.http.close()

    def log_in(self, next_url: str) -> httpx.Response:
        page = self.http.get("/oauth/login", params={"next": next_url})
        assert page.status_code == 200, page.text
        csrf = _field(page.text, "csrf")
        return self.http.post("/oauth/login", data={
            "login": self.resident.login, "password": self.resident.password, "csrf": csrf, "next": next_url,
        })

    def consent_page(self, url: str) -> httpx.Response:
        """Open an authorization URL, logging in first when the server asks to."""
        r = self.http.get(url)
        if r.status_code == 303 and r.headers["location"].startswith("/oauth/login"):
            next_url = parse_qs(urlsplit(r.headers["location"]).query)["next"][0]
            logged = self.log_in(next_url)
            assert logged.status_code == 303, logged.text
            r = self.http.get(logged.headers["location"])
        return r

    def decide(self, page: httpx.Response, decision: str = "approve") -> httpx.Response:
        assert page.status_code == 200, page.text
        return self.http.post("/oauth/authorize", data={"consent_token": _field(page.text, "consent_token"),
                                                        "decision": decision})

    def approve(self, url: str) -> str:
        """The full front channel: returns the URL the partner's redirect URI receives."""
        answer = self.decide(self.consent_page(url))
        assert answer.status_code == 303, answer.text
        return answer.headers["location"]


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} field in the page"
    return match.group(1)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def link(client: httpx.Client, base_url: str, resident: Resident, partner: Partner,
         scopes: list[str] | None = None) -> dict[str, Any]:
    """Link `partner` for `resident` and exchange the code: the token response."""
    verifier = new_verifier()
    params = authorize_params(partner, verifier, scope=" ".join(scopes or ALL_SCOPES))
    browser = Browser(base_url, resident)
    try:
        redirected = browser.approve("/oauth/authorize?" + httpx.QueryParams(params).__str__())
    finally:
        browser.close()
    code = query_of(redirected)["code"]
    r = exchange(client, partner, code, verifier)
    assert r.status_code == 200, r.text
    return r.json()


def exchange(client: httpx.Client, partner: Partner, code: str, verifier: str | None,
             redirect_uri: str = REDIRECT_URI) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        data["code_verifier"] = verifier
    if partner.client_secret is None:
        data["client_id"] = partner.client_id
        return client.post("/oauth/token", data=data)
    return client.post("/oauth/token", data=data, auth=partner.basic)


def refresh(client: httpx.Client, partner: Partner, refresh_token: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if partner.client_secret is None:
        data["client_id"] = partner.client_id
        return client.post("/oauth/token", data=data)
    return client.post("/oauth/token", data=data, auth=partner.basic)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def activity(event_id: str | None = None, behaviour: str = "no_disposable_cutlery", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id or "ev-" + uuid.uuid4().hex,
        "behaviour": behaviour,
        "quantity": 1,
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 600)),
        **extra,
    }


def signed_push(client: httpx.Client, partner: Partner, activities: list[dict[str, Any]], *,
                message_id: str | None = None, timestamp: int | None = None,
                secrets_: list[str] | None = None) -> httpx.Response:
    body = httpx.Request("POST", "/", json={"activities": activities}).content
    message_id = message_id or "msg_" + uuid.uuid4().hex
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = " ".join(sign(s, message_id, timestamp, body) for s in (secrets_ or [partner.webhook_secret]))
    return client.post(
        f"/v1/partners/{partner.client_id}/pushes/activities", content=body,
        headers={"content-type": "application/json", "webhook-id": message_id,
                 "webhook-timestamp": str(timestamp), "webhook-signature": signature},
    )
