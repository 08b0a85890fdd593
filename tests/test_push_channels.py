"""Push channels (issue 7) against local fake providers that check the exact requests we send: FCM HTTP v1
with its OAuth 2 token endpoint, APNs over HTTP/2, the log channel, and configuration from the environment.

No database is needed. Time is a `FakeClock` shared by a channel and its fake provider, so expiry is tested
by moving the clock, never by waiting."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from notifications.channels.apns import ApnsChannel, apns_id
from notifications.channels.base import RETRY_AFTER_MAX_S, Channel, Push, Sent, channel_from_env, parse_retry_after
from notifications.channels.fcm import FcmChannel
from notifications.channels.log import LogChannel
from tests.push_support import (
    APNS_KEY_ID,
    BUNDLE_ID,
    CLIENT_EMAIL,
    DEVICE_TOKEN,
    PROJECT_ID,
    TEAM_ID,
    FakeApns,
    FakeClock,
    FakeGoogle,
    Reply,
    pem,
    rsa_key,
)

FCM_TOKEN = "dXk3:APA91bF-fake_registration-token_0123456789"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
MESSAGE_ID = "0b6f7e55-event:holder-42:energy_ripe"


def full_push(token: str) -> Push:
    return Push(
        token=token, title="能量成熟了", body="你有 3 个能量球可以收取", deep_link="carbonwallet://energy",
        data={"kind": "energy_ripe", "count": "3"}, collapse_key="energy_ripe", badge=4, ttl_s=3600,
        message_id=MESSAGE_ID,
    )


def minimal_push(token: str, **changes: Any) -> Push:
    fields: dict[str, Any] = {"title": "t", "body": "b", "deep_link": "carbonwallet://inbox", "data": {}, **changes}
    return Push(token=token, **fields)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def google(clock: FakeClock) -> AsyncIterator[FakeGoogle]:
    fake = await FakeGoogle(clock).start()
    yield fake
    await fake.close()


@pytest.fixture
async def fcm(google: FakeGoogle, clock: FakeClock) -> AsyncIterator[FcmChannel]:
    channel = FcmChannel(google.config(), clock=clock, timeout_s=5)
    yield channel
    await channel.aclose()


@pytest.fixture
async def apple(clock: FakeClock) -> AsyncIterator[FakeApns]:
    fake = await FakeApns(clock).start()
    yield fake
    await fake.close()


@pytest.fixture
async def apns(apple: FakeApns, clock: FakeClock) -> AsyncIterator[ApnsChannel]:
    channel = ApnsChannel(apple.config(), clock=clock, timeout_s=5)
    yield channel
    await channel.aclose()


# FCM HTTP v1


async def test_fcm_sends_the_exact_v1_request(google: FakeGoogle, fcm: FcmChannel) -> None:
    sent = await fcm.send(full_push(FCM_TOKEN))

    assert sent == Sent("sent", provider_id=f"projects/{PROJECT_ID}/messages/0:1%fake")
    assert google.problems == []
    [call] = google.sends
    assert call["path"] == f"/v1/projects/{PROJECT_ID}/messages:send"
    assert call["authorization"].startswith("Bearer ya29.fake-0-")
    assert call["message"] == {
        "token": FCM_TOKEN,
        "notification": {"title": "能量成熟了", "body": "你有 3 个能量球可以收取"},
        "data": {"kind": "energy_ripe", "count": "3", "deep_link": "carbonwallet://energy", "message_id": MESSAGE_ID},
        "android": {"collapse_key": "energy_ripe", "ttl": "3600s", "notification": {"notification_count": 4}},
    }
    [claims] = google.token_requests  # signature, kid, iss, scope, grant type and exp - iat = 3600 checked by the fake
    assert claims["aud"] == google.token_uri  # the configured override, not the account's Google URI


async def test_fcm_minimal_push_sends_only_what_is_set(google: FakeGoogle, fcm: FcmChannel) -> None:
    sent = await fcm.send(minimal_push(FCM_TOKEN, data={"deep_link": "not ours", "step": "1"}))

    assert sent.outcome == "sent", sent
    assert google.sends[0]["message"] == {
        "token": FCM_TOKEN,
        "notification": {"title": "t", "body": "b"},
        "data": {"step": "1", "deep_link": "carbonwallet://inbox"},
        "android": {"ttl": "86400s"},
    }


async def test_fcm_concurrent_sends_share_one_access_token(google: FakeGoogle, fcm: FcmChannel) -> None:
    results = await asyncio.gather(*(fcm.send(minimal_push(f"{FCM_TOKEN}-{i}")) for i in range(25)))

    assert [r.outcome for r in results] == ["sent"] * 25
    assert len(google.token_requests) == 1
    assert len({call["authorization"] for call in google.sends}) == 1


async def test_fcm_access_token_is_renewed_a_minute_before_it_expires(
    google: FakeGoogle, fcm: FcmChannel, clock: FakeClock,
) -> None:
    assert (await fcm.send(minimal_push(FCM_TOKEN))).outcome == "sent"
    clock.advance(google.expires_in_s - 60 - 1)
    assert (await fcm.send(minimal_push(FCM_TOKEN))).outcome == "sent"
    assert len(google.token_requests) == 1
    clock.advance(1)
    assert (await fcm.send(minimal_push(FCM_TOKEN))).outcome == "sent"
    assert len(google.token_requests) == 2
    assert google.unauthorized == 0 and google.problems == []


async def test_fcm_refused_access_token_is_renewed_once_for_all_senders(google: FakeGoogle, fcm: FcmChannel) -> None:
    assert (await fcm.send(minimal_push(FCM_TOKEN))).outcome == "sent"
    google.revoke_tokens()

    results = await asyncio.gather(*(fcm.send(minimal_push(FCM_TOKEN)) for _ in range(10)))

    assert [r.outcome for r in results] == ["sent"] * 10
    assert google.unauthorized == 10  # each in-flight send was refused once ...
    assert len(google.token_requests) == 2  # ... and one renewal served them all


async def test_fcm_401_after_renewal_is_retry(google: FakeGoogle, fcm: FcmChannel) -> None:
    google.expires_in_s = 0  # every token it hands out is already expired

    sent = await fcm.send(minimal_push(FCM_TOKEN))

    assert sent == Sent("retry", "UNAUTHENTICATED: Request had invalid authentication credentials.")
    assert google.unauthorized == 2 and len(google.token_requests) == 2


def _fcm_error(status: int, code: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": status, "status": code, "message": message, "details": list(details)}}


@pytest.mark.parametrize(("reply", "expected"), [
    (Reply(404, _fcm_error(404, "NOT_FOUND", "Requested entity was not found.",
                           {"@type": FCM_ERROR, "errorCode": "UNREGISTERED"})),
     Sent("invalid_token", "UNREGISTERED: Requested entity was not found.")),
    (Reply(400, _fcm_error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                           {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"})),
     Sent("invalid_token", "INVALID_ARGUMENT: The registration token is not a valid FCM registration token")),
    (Reply(400, _fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.token'",
                           {"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.token"}]})),
     Sent("invalid_token", "INVALID_ARGUMENT: Invalid value at 'message.token'")),
    (Reply(400, _fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
                           {"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.data[0].value"}]})),
     Sent("failed", "INVALID_ARGUMENT: Invalid value at 'message.data[0].value' (TYPE_STRING), 12")),
    (Reply(429, _fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.",
                           {"@type": FCM_ERROR, "errorCode": "QUOTA_EXCEEDED"}), {"retry-after": "30"}),
     Sent("retry", "QUOTA_EXCEEDED: Quota exceeded.", 30.0)),
    (Reply(503, _fcm_error(503, "UNAVAILABLE", "The service is currently unavailable."), {"retry-after": "5"}),
     Sent("retry", "UNAVAILABLE: The service is currently unavailable.", 5.0)),
    (Reply(500, _fcm_error(500, "INTERNAL", "Internal error encountered.")),
     Sent("retry", "INTERNAL: Internal error encountered.")),
    (Reply(502, None), Sent("retry", "HTTP 502")),
    (Reply(403, _fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch",
                           {"@type": FCM_ERROR, "errorCode": "SENDER_ID_MISMATCH"})),
     Sent("failed", "SENDER_ID_MISMATCH: SenderId mismatch")),
    (Reply(401, _fcm_error(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service",
                           {"@type": FCM_ERROR, "errorCode": "THIRD_PARTY_AUTH_ERROR"})),
     Sent("failed", "THIRD_PARTY_AUTH_ERROR: Auth error from APNS or Web Push Service")),
])
async def test_fcm_answers_map_to_outcomes(google: FakeGoogle, fcm: FcmChannel, reply: Reply, expected: Sent) -> None:
    google.always = reply

    assert await fcm.send(full_push(FCM_TOKEN)) == expected
    assert len(google.sends) == 1  # no hidden retries: backoff belongs to the delivery job
    assert google.problems == []


async def test_fcm_token_endpoint_refusing_our_key_is_failed(google: FakeGoogle, fcm: FcmChannel) -> None:
    google.trusted_key = rsa_key(1).public_key()  # Google knows another key: our signature must not pass

    sent = await fcm.send(minimal_push(FCM_TOKEN))

    assert sent.outcome == "failed" and sent.detail.startswith("token endpoint: invalid_grant"), sent
    assert google.problems == ["assertion: bad signature"] and google.sends == []


async def test_fcm_token_endpoint_outage_is_retry(google: FakeGoogle, fcm: FcmChannel) -> None:
    google.token_outage = Reply(503, {"error": "backendError"}, {"retry-after": "7"})

    assert await fcm.send(minimal_push(FCM_TOKEN)) == Sent("retry", "token endpoint: backendError", 7.0)
    assert google.sends == []


async def test_fcm_unreachable_provider_is_retry(google: FakeGoogle, fcm: FcmChannel) -> None:
    assert (await fcm.send(minimal_push(FCM_TOKEN))).outcome == "sent"
    await google.close()  # also closes the kept-alive connection

    first, second = await fcm.send(minimal_push(FCM_TOKEN)), await fcm.send(minimal_push(FCM_TOKEN))

    assert first.outcome == "retry" and first.detail.startswith("network error: "), first  # the closed connection
    assert second.outcome == "retry" and second.detail.startswith("network error: ConnectError"), second


async def test_fcm_empty_token_is_invalid_without_a_request(google: FakeGoogle, fcm: FcmChannel) -> None:
    assert (await fcm.send(minimal_push(""))).outcome == "invalid_token"
    assert google.sends == [] and google.token_requests == []


# APNs over HTTP/2


async def test_apns_sends_the_exact_http2_request(apple: FakeApns, apns: ApnsChannel, clock: FakeClock) -> None:
    sent = await apns.send(full_push(DEVICE_TOKEN))

    assert sent == Sent("sent", provider_id=apns_id(MESSAGE_ID))
    assert apple.problems == []
    [request] = apple.requests
    assert request.path == f"/3/device/{DEVICE_TOKEN}"
    assert {k: v for k, v in request.headers.items() if k.startswith("apns-")} == {
        "apns-topic": BUNDLE_ID, "apns-push-type": "alert", "apns-priority": "10",
        "apns-expiration": str(int(clock()) + 3600), "apns-id": apns_id(MESSAGE_ID), "apns-collapse-id": "energy_ripe",
    }
    assert request.jwt_header["alg"] == "ES256" and request.jwt_header["kid"] == APNS_KEY_ID
    assert request.claims == {"iss": TEAM_ID, "iat": int(clock())}
    assert request.body == {
        "aps": {"alert": {"title": "能量成熟了", "body": "你有 3 个能量球可以收取"}, "badge": 4, "sound": "default"},
        "deep_link": "carbonwallet://energy", "kind": "energy_ripe", "count": "3",
    }


async def test_the_fake_apns_speaks_only_http2_as_the_channel_must(apple: FakeApns) -> None:
    async with httpx.AsyncClient(http1=False, http2=True) as h2_client:  # the channel's client settings
        response = await h2_client.post(f"{apple.base_url}/3/device/{DEVICE_TOKEN}", json={})
        assert response.http_version == "HTTP/2"
    async with httpx.AsyncClient() as h1_client:
        with pytest.raises(httpx.TransportError):
            await h1_client.post(f"{apple.base_url}/3/device/{DEVICE_TOKEN}", json={})
    assert apple.problems[-1].startswith("not HTTP/2")


def test_apns_id_is_a_stable_uuid5_of_our_message_id() -> None:
    assert uuid.UUID(apns_id(MESSAGE_ID)).version == 5
    assert apns_id(MESSAGE_ID) == apns_id(MESSAGE_ID) != apns_id(MESSAGE_ID + "x")


async def test_apns_minimal_push_sends_only_what_is_set(apple: FakeApns, apns: ApnsChannel) -> None:
    sent = await apns.send(minimal_push(DEVICE_TOKEN, ttl_s=0))

    [request] = apple.requests
    assert sent.outcome == "sent" and uuid.UUID(sent.provider_id)  # without our id, APNs makes one and echoes it
    assert {k: v for k, v in request.headers.items() if k.startswith("apns-")} == {
        "apns-topic": BUNDLE_ID, "apns-push-type": "alert", "apns-priority": "10", "apns-expiration": "0",
    }
    assert request.body == {"aps": {"alert": {"title": "t", "body": "b"}, "sound": "default"},
                            "deep_link": "carbonwallet://inbox"}


async def test_apns_concurrent_sends_share_one_connection_and_one_jwt(apple: FakeApns, apns: ApnsChannel) -> None:
    results = await asyncio.gather(*(apns.send(full_push(DEVICE_TOKEN)) for _ in range(20)))

    assert [r.outcome for r in results] == ["sent"] * 20
    assert apple.connections == 1 and len(apple.jwts) == 1 and apple.problems == []


async def test_apns_jwt_is_reused_for_50_minutes_then_renewed(
    apple: FakeApns, apns: ApnsChannel, clock: FakeClock,
) -> None:
    assert (await apns.send(minimal_push(DEVICE_TOKEN))).outcome == "sent"
    clock.advance(50 * 60 - 1)
    assert (await apns.send(minimal_push(DEVICE_TOKEN))).outcome == "sent"
    assert len(apple.jwts) == 1
    clock.advance(1)
    assert (await apns.send(minimal_push(DEVICE_TOKEN))).outcome == "sent"
    assert len(apple.jwts) == 2 and apple.requests[-1].claims["iat"] == int(clock())
    assert apple.problems == []


async def test_apns_expired_provider_token_gets_a_new_jwt_and_one_retry(apple: FakeApns, apns: ApnsChannel) -> None:
    apple.replies = [Reply(403, {"reason": "ExpiredProviderToken"})]

    assert (await apns.send(full_push(DEVICE_TOKEN))).outcome == "sent"
    assert len(apple.requests) == 2 and len(apple.jwts) == 2


async def test_apns_expired_provider_token_twice_is_retry(apple: FakeApns, apns: ApnsChannel) -> None:
    apple.always = Reply(403, {"reason": "ExpiredProviderToken"})

    assert await apns.send(full_push(DEVICE_TOKEN)) == Sent("retry", "ExpiredProviderToken", None, apns_id(MESSAGE_ID))
    assert len(apple.requests) == 2


@pytest.mark.parametrize(("reply", "outcome", "retry_after_s"), [
    (Reply(410, {"reason": "Unregistered", "timestamp": 1_700_000_000_000}), "invalid_token", None),
    (Reply(410, {"reason": "ExpiredToken"}), "invalid_token", None),
    (Reply(400, {"reason": "BadDeviceToken"}), "invalid_token", None),
    (Reply(400, {"reason": "DeviceTokenNotForTopic"}), "invalid_token", None),
    (Reply(429, {"reason": "TooManyRequests"}, {"retry-after": "12"}), "retry", 12.0),
    (Reply(429, {"reason": "TooManyProviderTokenUpdates"}), "retry", None),
    (Reply(500, {"reason": "InternalServerError"}), "retry", None),
    (Reply(503, {"reason": "ServiceUnavailable"}, {"retry-after": "60"}), "retry", 60.0),
    (Reply(403, {"reason": "InvalidProviderToken"}), "failed", None),
    (Reply(400, {"reason": "BadCollapseId"}), "failed", None),
    (Reply(413, {"reason": "PayloadTooLarge"}), "failed", None),
])
async def test_apns_answers_map_to_outcomes(
    apple: FakeApns, apns: ApnsChannel, reply: Reply, outcome: str, retry_after_s: float | None,
) -> None:
    apple.always = reply

    sent = await apns.send(full_push(DEVICE_TOKEN))

    assert sent == Sent(outcome, reply.body["reason"], retry_after_s, apns_id(MESSAGE_ID))  # type: ignore[arg-type, index]
    assert len(apple.requests) == 1 and apple.problems == []


@pytest.mark.parametrize("failure", ["server closed", "connection dropped mid-request", "no answer in time"])
async def test_apns_network_failures_are_retry(apple: FakeApns, clock: FakeClock, failure: str) -> None:
    channel = ApnsChannel(apple.config(), clock=clock, timeout_s=0.5)
    try:
        assert (await channel.send(minimal_push(DEVICE_TOKEN))).outcome == "sent"
        if failure == "server closed":
            await apple.close()
        else:
            apple.mode = "drop" if failure == "connection dropped mid-request" else "hang"
        sent = await channel.send(minimal_push(DEVICE_TOKEN))
    finally:
        await channel.aclose()
    assert sent.outcome == "retry" and sent.detail.startswith("network error: "), sent


async def test_apns_malformed_device_token_is_invalid_without_a_request(apple: FakeApns, apns: ApnsChannel) -> None:
    for token in ("", "../../2/admin", DEVICE_TOKEN + "/x", "zz" * 32):
        assert (await apns.send(minimal_push(token))).outcome == "invalid_token"
    assert apple.requests == [] and apple.connections == 0


# The log channel, the interface's values, and configuration


async def test_log_channel_writes_one_json_line_with_the_token_shortened(caplog: pytest.LogCaptureFixture) -> None:
    from api.observability import JsonFormatter  # the production log format (tests may import api)

    caplog.set_level(logging.INFO, logger="notifications.push")
    push = full_push(DEVICE_TOKEN)

    assert await LogChannel().send(push) == Sent("sent", provider_id=MESSAGE_ID)

    [record] = [r for r in caplog.records if r.name == "notifications.push"]
    line = JsonFormatter().format(record)
    fields = json.loads(line)
    assert DEVICE_TOKEN not in line and fields["token_tail"] == DEVICE_TOKEN[-6:]
    assert {k: fields[k] for k in ("channel", "title", "deep_link", "data", "badge", "ttl_s", "message_id")} == {
        "channel": "log", "title": push.title, "deep_link": push.deep_link, "data": push.data, "badge": 4,
        "ttl_s": 3600, "message_id": MESSAGE_ID,
    }


def test_push_refuses_values_providers_would_reject() -> None:
    with pytest.raises(ValueError, match="strings"):
        minimal_push("t", data={"count": 3})
    with pytest.raises(ValueError, match="ttl_s"):
        minimal_push("t", ttl_s=-1)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now_s = 1_700_000_000.0
    in_30_s = format_datetime(datetime.fromtimestamp(now_s + 30, UTC), usegmt=True)
    assert parse_retry_after("120", now_s) == 120.0
    assert parse_retry_after(in_30_s, now_s) == 30.0
    assert parse_retry_after(format_datetime(datetime.fromtimestamp(now_s - 5, UTC), usegmt=True), now_s) == 0.0
    assert parse_retry_after("99999999", now_s) == RETRY_AFTER_MAX_S
    assert [parse_retry_after(v, now_s) for v in (None, "", "soon", "nan", "-inf")] == [None] * 5


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


async def test_channels_from_env(tmp_path: Path, google: FakeGoogle, apple: FakeApns) -> None:
    assert list(channel_from_env({})) == ["log"]
    account = {**google.service_account(), "token_uri": google.token_uri}
    env = {
        "CW_FCM_BASE_URL": google.base_url,
        "CW_FCM_SERVICE_ACCOUNT_FILE": _write(tmp_path / "account.json", json.dumps(account)),
        "CW_APNS_BASE_URL": apple.base_url, "CW_APNS_TEAM_ID": TEAM_ID, "CW_APNS_KEY_ID": APNS_KEY_ID,
        "CW_APNS_KEY_FILE": _write(tmp_path / "AuthKey.p8", pem(apple.key)), "CW_APNS_BUNDLE_ID": BUNDLE_ID,
    }
    channels = channel_from_env(env)
    try:
        assert sorted(channels) == ["apns", "fcm", "log"]
        assert all(channel.name == name for name, channel in channels.items())
        fcm: Channel = channels["fcm"]
        assert (await fcm.send(minimal_push(FCM_TOKEN))).outcome == "sent"
        assert (await channels["apns"].send(minimal_push(DEVICE_TOKEN))).outcome == "sent"
        assert google.problems == [] and apple.problems == [] and google.token_requests[0]["iss"] == CLIENT_EMAIL
    finally:
        for channel in channels.values():
            await channel.aclose()


@pytest.mark.parametrize(("setup", "message"), [
    ({"CW_FCM_SERVICE_ACCOUNT_FILE": "/nonexistent/account.json"},
     r"CW_FCM_SERVICE_ACCOUNT_FILE: cannot read /nonexistent/account.json \(No such file or directory\)\."),
    ({"CW_FCM_SERVICE_ACCOUNT_FILE": ("account.json", "{not json")}, r"CW_FCM_SERVICE_ACCOUNT_FILE: .* is not JSON"),
    ({"CW_FCM_SERVICE_ACCOUNT_FILE": ("account.json", '{"project_id": "p"}')},
     r"CW_FCM_SERVICE_ACCOUNT_FILE: in .*, the service account lacks client_email, private_key, token_uri\."),
    ({"CW_FCM_SERVICE_ACCOUNT_FILE": ("account.json", "bad-key")},
     r"CW_FCM_SERVICE_ACCOUNT_FILE: in .*, the service account's private_key is not a PEM private key\."),
    ({"CW_FCM_SERVICE_ACCOUNT_FILE": ("account.json", "ec-key")},
     r"CW_FCM_SERVICE_ACCOUNT_FILE: in .*, the service account's private_key is not an RSA key\."),
    ({"CW_FCM_SERVICE_ACCOUNT_FILE": ("account.json", "good"), "CW_FCM_BASE_URL": "fcm.googleapis.com"},
     r"CW_FCM_BASE_URL must be an http\(s\) URL"),
    ({"CW_APNS_TEAM_ID": TEAM_ID},
     r"APNs needs all of .*; CW_APNS_KEY_ID, CW_APNS_KEY_FILE, CW_APNS_BUNDLE_ID not set"),
    ({"CW_APNS_KEY_FILE": "/nonexistent/AuthKey.p8"}, r"CW_APNS_TEAM_ID, CW_APNS_KEY_ID, CW_APNS_BUNDLE_ID not set"),
    ({"CW_APNS_KEY_FILE": "/nonexistent/AuthKey.p8", "CW_APNS_TEAM_ID": TEAM_ID, "CW_APNS_KEY_ID": APNS_KEY_ID,
      "CW_APNS_BUNDLE_ID": BUNDLE_ID}, r"CW_APNS_KEY_FILE: cannot read /nonexistent/AuthKey\.p8"),
    ({"CW_APNS_KEY_FILE": ("AuthKey.p8", "rsa-key"), "CW_APNS_TEAM_ID": TEAM_ID, "CW_APNS_KEY_ID": APNS_KEY_ID,
      "CW_APNS_BUNDLE_ID": BUNDLE_ID}, r"CW_APNS_KEY_FILE: in .*, the APNs key is not an EC P-256 key"),
])
def test_channels_from_env_refuse_bad_settings_with_a_sentence(
    tmp_path: Path, setup: dict[str, Any], message: str,
) -> None:
    ec_pem = pem(ec.generate_private_key(ec.SECP256R1()))
    good = {"project_id": PROJECT_ID, "client_email": CLIENT_EMAIL, "private_key": pem(rsa_key()),
            "token_uri": "https://oauth2.googleapis.com/token"}
    contents = {"bad-key": json.dumps({**good, "private_key": "-----BEGIN PRIVATE KEY-----\nnope\n"}),
                "ec-key": json.dumps({**good, "private_key": ec_pem}), "good": json.dumps(good),
                "rsa-key": pem(rsa_key())}
    env = {
        name: _write(tmp_path / value[0], contents.get(value[1], value[1])) if isinstance(value, tuple) else value
        for name, value in setup.items()
    }

    with pytest.raises(ValueError, match=message):
        channel_from_env(env)
