"""Fake push providers for the channel tests, on the test's event loop: a Google token endpoint with an FCM
v1 endpoint (HTTP/1.1), and APNs (HTTP/2 with prior knowledge, on h2). Each checks every request the way
the real provider would (signatures verified with cryptography alone, claims, headers, body shape), records
what it saw, lists what we got wrong in `problems`, and answers with whatever a test scripts in `replies`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded
from h2.exceptions import ProtocolError

from notifications.channels.apns import ApnsConfig
from notifications.channels.fcm import FCM_SCOPE, JWT_BEARER_GRANT, FcmConfig

PROJECT_ID = "carbon-wallet-test"
CLIENT_EMAIL = "push@carbon-wallet-test.iam.gserviceaccount.com"
RSA_KEY_ID = "0f1e2d3c4b5a"
TEAM_ID, APNS_KEY_ID, BUNDLE_ID = "TEAM123456", "KEY7654321", "dev.carbonwallet.app"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
DEVICE_TOKEN = "a1b2c3d4" * 8  # 64 hex characters, like a real APNs device token


class FakeClock:
    """Time that moves only when a test says so; shared by a channel and its fake provider."""

    def __init__(self) -> None:
        self.now_s = float(int(time.time()))

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@dataclass
class Reply:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@cache
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    """Test RSA keys, generated once per session (n picks a different key)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ).decode()


def verify_jws(token: str, public_key: Any, alg: Literal["RS256", "ES256"]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a compact JWS after checking its signature; raises ValueError when it does not hold."""

    def part(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header, claims, signature = json.loads(part(header_b64)), json.loads(part(claims_b64)), part(signature_b64)
        signed = f"{header_b64}.{claims_b64}".encode()
        if header.get("alg") != alg:
            raise ValueError(f"alg is {header.get('alg')!r}, not {alg}")
        if alg == "RS256":
            public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        else:  # JWS ES256 signatures are r || s, 32 bytes each, not DER
            if len(signature) != 64:
                raise ValueError(f"an ES256 signature has 64 bytes, not {len(signature)}")
            der = encode_dss_signature(int.from_bytes(signature[:32]), int.from_bytes(signature[32:]))
            public_key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("bad signature") from None
    return header, claims


class FakeGoogle:
    """Google's OAuth 2 token endpoint (JWT-bearer grant) and FCM HTTP v1 `messages:send`, over HTTP/1.1."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.trusted_key: Any = rsa_key().public_key()  # the account key Google knows
        self.expires_in_s = 3599
        self.token_requests: list[dict[str, Any]] = []  # accepted assertions' claims
        self.sends: list[dict[str, Any]] = []  # every send that passed authentication: path, authorization, message
        self.unauthorized = 0  # sends refused with 401 because the bearer token was not current
        self.problems: list[str] = []
        self.replies: list[Reply] = []  # answers for the next accepted sends, in order
        self.always: Reply | None = None  # the answer to every accepted send
        self.token_outage: Reply | None = None  # the token endpoint's answer to everything, when set
        self._access_tokens: dict[str, float] = {}  # token -> expiry (fake clock)
        self._server = _Http1Server(self._route)
        self.base_url = ""

    async def start(self) -> FakeGoogle:
        self.base_url = await self._server.start()
        return self

    async def close(self) -> None:
        await self._server.close()

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def service_account(self) -> dict[str, str]:
        return {"type": "service_account", "project_id": PROJECT_ID, "private_key_id": RSA_KEY_ID,
                "private_key": pem(rsa_key()), "client_email": CLIENT_EMAIL, "token_uri": GOOGLE_TOKEN_URI}

    def config(self) -> FcmConfig:
        return FcmConfig(base_url=self.base_url, service_account=self.service_account(), token_uri=self.token_uri)

    def revoke_tokens(self) -> None:
        self._access_tokens.clear()

    async def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if (method, path) == ("POST", "/token"):
            return self._token(headers, body)
        if method == "POST" and path.startswith("/v1/"):
            return self._send(path, headers, body)
        self.problems.append(f"unexpected request {method} {path}")
        return Reply(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})

    def _token(self, headers: dict[str, str], body: bytes) -> Reply:
        if self.token_outage is not None:
            return self.token_outage
        form = parse_qs(body.decode(), keep_blank_values=True)
        problems = []
        if headers.get("content-type") != "application/x-www-form-urlencoded":
            problems.append(f"token request content-type {headers.get('content-type')!r}")
        if sorted(form) != ["assertion", "grant_type"] or form["grant_type"] != [JWT_BEARER_GRANT]:
            problems.append(f"token request form {form!r}")
        try:
            header, claims = verify_jws(form.get("assertion", [""])[0], self.trusted_key, "RS256")
        except (ValueError, KeyError) as exc:
            header, claims = {}, {}
            problems.append(f"assertion: {exc}")
        if header and header.get("kid") != RSA_KEY_ID:
            problems.append(f"assertion kid {header.get('kid')!r}")
        want = {"iss": CLIENT_EMAIL, "scope": FCM_SCOPE, "aud": self.token_uri}
        if claims and ({k: claims.get(k) for k in want} != want or set(claims) != {*want, "iat", "exp"}):
            problems.append(f"assertion claims {claims!r}")
        if claims and (claims["exp"] - claims["iat"] != 3600 or abs(claims["iat"] - self.clock()) > 60):
            problems.append(f"assertion times iat={claims['iat']} exp={claims['exp']} now={self.clock()}")
        if problems:
            self.problems.extend(problems)
            return Reply(400, {"error": "invalid_grant", "error_description": "; ".join(problems)})
        token = f"ya29.fake-{len(self.token_requests)}-{secrets.token_hex(8)}"
        self._access_tokens[token] = self.clock() + self.expires_in_s
        self.token_requests.append(claims)
        return Reply(200, {"access_token": token, "expires_in": self.expires_in_s, "token_type": "Bearer"})

    def _send(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        authorization = headers.get("authorization", "")
        token = authorization.removeprefix("Bearer ")
        if not authorization.startswith("Bearer ") or self._access_tokens.get(token, 0) <= self.clock():
            self.unauthorized += 1
            return Reply(401, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                         "message": "Request had invalid authentication credentials."}})
        problems = [] if path == f"/v1/projects/{PROJECT_ID}/messages:send" else [f"send path {path}"]
        if headers.get("content-type") != "application/json":
            problems.append(f"send content-type {headers.get('content-type')!r}")
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        problems += fcm_request_problems(request)
        message = request.get("message") if isinstance(request, dict) else None
        self.sends.append({"path": path, "authorization": authorization, "message": message})
        if problems:
            self.problems.extend(problems)
            return Reply(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "; ".join(problems)}})
        if self.always or self.replies:
            return self.always or self.replies.pop(0)
        return Reply(200, {"name": f"projects/{PROJECT_ID}/messages/0:{len(self.sends)}%fake"})


def fcm_request_problems(request: Any) -> list[str]:
    """What FCM v1 would reject in a request body (the subset of the Message resource we use)."""
    message = request.get("message") if isinstance(request, dict) else None
    if not isinstance(message, dict) or set(request) != {"message"}:
        return [f"body is not {{'message': {{...}}}}: {request!r}"]
    problems = []
    if set(message) - {"token", "notification", "data", "android"} or not message.get("token"):
        problems.append(f"message fields {sorted(message)}")
    notification = message.get("notification")
    if not isinstance(notification, dict) or set(notification) != {"title", "body"}:
        problems.append(f"notification {notification!r}")
    data = message.get("data", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        problems.append(f"data values must be strings: {data!r}")
    if any(k in ("from", "notification", "message_type") or k.startswith(("google", "gcm")) for k in data):
        problems.append(f"reserved data key in {sorted(data)}")
    android = message.get("android", {})
    if set(android) - {"collapse_key", "ttl", "notification"}:
        problems.append(f"android fields {sorted(android)}")
    ttl = android.get("ttl", "0s")
    if not re.fullmatch(r"\d+s", ttl) or int(ttl[:-1]) > 2_419_200:
        problems.append(f"android.ttl {ttl!r}")
    count = android.get("notification", {}).get("notification_count", 0)
    if set(android.get("notification", {})) - {"notification_count"} or not isinstance(count, int) or count < 0:
        problems.append(f"android.notification {android.get('notification')!r}")
    return problems


@dataclass
class ApnsRequest:
    path: str
    headers: dict[str, str]  # every header but pseudo-headers and authorization
    jwt: str
    jwt_header: dict[str, Any]
    claims: dict[str, Any]
    body: dict[str, Any]


class FakeApns:
    """APNs over HTTP/2 with prior knowledge. `mode` "hang" never answers; "drop" closes the connection."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.requests: list[ApnsRequest] = []
        self.problems: list[str] = []
        self.replies: list[Reply] = []
        self.always: Reply | None = None
        self.mode: Literal["answer", "hang", "drop"] = "answer"
        self.connections = 0
        self._transports: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None
        self.base_url = ""

    async def start(self) -> FakeApns:
        self._server = await asyncio.get_running_loop().create_server(lambda: _H2Protocol(self), "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for transport in list(self._transports):
            transport.close()
        await self._server.wait_closed()

    def config(self) -> ApnsConfig:
        return ApnsConfig(base_url=self.base_url, team_id=TEAM_ID, key_id=APNS_KEY_ID,
                          private_key_pem=pem(self.key), bundle_id=BUNDLE_ID)

    @property
    def jwts(self) -> list[str]:
        """The distinct provider tokens seen, in order."""
        return list(dict.fromkeys(r.jwt for r in self.requests))

    def handle(self, pairs: list[tuple[str, str]], raw: bytes) -> Reply:
        headers = dict(pairs)
        if len(headers) != len(pairs):
            self.problems.append(f"duplicate headers {pairs}")
            return Reply(400, {"reason": "DuplicateHeaders"})
        path = headers.get(":path", "")
        problems = [] if headers.get(":method") == "POST" and headers.get(":scheme") == "http" else [f"{pairs}"]
        if not re.fullmatch(r"/3/device/[0-9a-f]{64}", path):
            problems.append(f"path {path}")
        scheme, _, jwt = headers.get("authorization", "").partition(" ")
        try:
            jwt_header, claims = verify_jws(jwt, self.key.public_key(), "ES256")
        except (ValueError, KeyError) as exc:
            self.problems.append(f"provider token: {exc}")
            return Reply(403, {"reason": "InvalidProviderToken"})
        if scheme != "bearer" or jwt_header.get("kid") != APNS_KEY_ID or set(claims) != {"iss", "iat"}:
            problems.append(f"provider token {scheme} {jwt_header} {claims}")
        if claims.get("iss") != TEAM_ID or not isinstance(claims.get("iat"), int):
            problems.append(f"provider token claims {claims}")
        elif self.clock() - claims["iat"] > 3600:
            self.problems.append(f"provider token older than an hour: iat={claims['iat']} now={self.clock()}")
            return Reply(403, {"reason": "ExpiredProviderToken"})
        apns = {k: v for k, v in headers.items() if not k.startswith(":") and k != "authorization"}
        problems += apns_header_problems(apns, self.clock())
        try:
            body = json.loads(raw)
            aps = body["aps"]
            if set(aps) - {"alert", "badge", "sound"} or set(aps["alert"]) != {"title", "body"}:
                problems.append(f"aps {aps}")
        except (ValueError, KeyError, TypeError):
            body = {}
            problems.append(f"body {raw!r}")
        if len(raw) > 4096:
            return Reply(413, {"reason": "PayloadTooLarge"})
        self.requests.append(ApnsRequest(path, apns, jwt, jwt_header, claims, body))
        if problems:
            self.problems.extend(problems)
            return Reply(400, {"reason": "FakeRejected: " + "; ".join(problems)})
        return self.always or (self.replies.pop(0) if self.replies else Reply(200))


def apns_header_problems(headers: dict[str, str], now_s: float) -> list[str]:
    problems = []
    expected = {"apns-topic": BUNDLE_ID, "apns-push-type": "alert", "apns-priority": "10"}
    if {k: headers.get(k) for k in expected} != expected:
        problems.append(f"apns headers {headers}")
    known = {*expected, "apns-expiration", "apns-id", "apns-collapse-id", "content-type", "content-length",
             "accept", "accept-encoding", "user-agent"}
    if set(headers) - known:
        problems.append(f"unexpected headers {sorted(set(headers) - known)}")
    expiration = headers.get("apns-expiration", "")
    if not expiration.isdigit() or (expiration != "0" and int(expiration) < now_s):
        problems.append(f"apns-expiration {expiration!r}")
    if "apns-id" in headers and str(uuid.UUID(headers["apns-id"])) != headers["apns-id"]:
        problems.append(f"apns-id {headers['apns-id']!r} is not a lowercase canonical UUID")
    if len(headers.get("apns-collapse-id", "").encode()) > 64:
        problems.append("apns-collapse-id longer than 64 bytes")
    return problems


class _H2Protocol(asyncio.Protocol):
    """One HTTP/2 server connection, after h2's asyncio server example: events in, frames out."""

    def __init__(self, fake: FakeApns) -> None:
        self.fake = fake
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.fake.connections += 1
        self.fake._transports.add(transport)
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.fake._transports.discard(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as exc:
            self.fake.problems.append(f"not HTTP/2: {exc}")
            self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.streams[event.stream_id] = (list(event.headers), bytearray())
            elif isinstance(event, DataReceived):
                self.streams[event.stream_id][1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self._respond(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self.transport.close()
        if not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())

    def _respond(self, stream_id: int) -> None:
        pairs, raw = self.streams.pop(stream_id)
        if self.fake.mode != "answer":
            if self.fake.mode == "drop":
                self.transport.abort()  # type: ignore[union-attr]
            return
        reply = self.fake.handle(pairs, bytes(raw))
        apns_id = dict(pairs).get("apns-id") or str(uuid.uuid4())
        content = json.dumps(reply.body).encode() if reply.body is not None else b""
        headers = [(":status", str(reply.status)), ("apns-id", apns_id), *reply.headers.items()]
        if content:
            headers += [("content-type", "application/json"), ("content-length", str(len(content)))]
        self.conn.send_headers(stream_id, headers, end_stream=not content)
        if content:
            self.conn.send_data(stream_id, content, end_stream=True)


Route = Callable[[str, str, dict[str, str], bytes], Awaitable[Reply]]


class _Http1Server:
    """Just enough HTTP/1.1 for httpx: Content-Length bodies and keep-alive."""

    def __init__(self, route: Route) -> None:
        self._route = route
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                reply = await self._route(method, target, headers, body)
                content = json.dumps(reply.body).encode() if reply.body is not None else b""
                lines = [f"HTTP/1.1 {reply.status} X", "content-type: application/json",
                         f"content-length: {len(content)}", *(f"{k}: {v}" for k, v in reply.headers.items())]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + content)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
