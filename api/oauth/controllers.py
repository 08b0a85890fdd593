"""The OAuth 2 authorization server's endpoints: metadata (RFC 8414), the authorization endpoint with its
login and consent pages, the token endpoint and revocation (RFC 7009)."""

from __future__ import annotations

import base64
import binascii
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_200_OK, HTTP_303_SEE_OTHER

from api.auth.sessions import revoke_session, start_session
from api.oauth.client_credentials import client_credentials_scopes
from api.oauth.grants import (
    REFRESH_PREFIX,
    GrantTokens,
    OAuthError,
    exchange_code,
    issue_code,
    revoke_grant,
    revoke_refresh_token,
    rotate_refresh_token,
)
from api.oauth.requests import PageError, RedirectError, parse_authorize, with_params
from api.oauth.web import (
    CONSENT_TTL_S,
    ConsentRequest,
    csrf_cookie,
    csrf_ok,
    pick_language,
    session_cookie,
    signed_in_holder,
    strings,
)
from api.partners.auth import check_partner_limits
from api.problems import Problem, problem_body
from api.security import client_ip, login_subject
from wallet.accounts.service import link_partner
from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.holders.service import authenticate, get_holder
from wallet.partners.service import SCOPES, authenticate_client, get_partner, scope_descriptions

__all__ = ["MetadataController", "OAuthController"]

Req = Request[Any, Any, State]
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenResponse(msgspec.Struct, kw_only=True):
    """RFC 6749 §5.1, plus the sub-account the tokens act for (the resident's link to your platform). A
    client_credentials token acts for no resident and has no refresh token (§4.4.3): both are left out."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str | msgspec.UnsetType = msgspec.UNSET
    scope: str
    sub_account_id: str | msgspec.UnsetType = msgspec.UNSET


class OAuthErrorBody(Problem, kw_only=True):
    """RFC 6749 §5.2 (`error`, `error_description`) with the RFC 9457 members beside them."""

    error: str
    error_description: str


def _oauth_errors(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(data_container=OAuthErrorBody, media_type="application/json", generate_examples=False,
                             description=HTTPStatus(status).phrase)
        for status in statuses
    }


def issuer(request: Req) -> str:
    return request.app.state.settings.public_url or str(request.base_url).rstrip("/")


def _page(
    template: str, language: str, status: int = 200, cookies: list[Any] | None = None, **context: Any
) -> Template:
    return Template(
        template_name=template, context={"t": strings(language), **context}, status_code=status,
        headers=PAGE_HEADERS, cookies=[c for c in cookies or [] if c is not None],
    )


def _error_page(language: str, error: PageError) -> Template:
    message = strings(language)[error.key].format(detail=error.detail)
    return _page("error.html.j2", language, status=400, message=message)


def _redirect(uri: str, **params: str | None) -> Redirect:
    return Redirect(with_params(uri, params), status_code=HTTP_303_SEE_OTHER, headers={"Cache-Control": "no-store"})


class MetadataController(Controller):
    path = "/.well-known"
    tags = ["oauth"]
    opt = {"exclude_from_auth": True}

    @get("/oauth-authorization-server", operation_id="oauthMetadata", summary="OAuth server metadata (RFC 8414)")
    async def metadata(self, request: Req) -> Response[dict[str, Any]]:
        """Discovery for OAuth client libraries: endpoints, scopes and the one PKCE method (S256)."""
        base = issuer(request)
        body = {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "scopes_supported": list(SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
            "ui_locales_supported": ["zh-CN", "en"],
            "service_documentation": f"{base}/schema",
        }
        return Response(body, headers={"Cache-Control": "public, max-age=300"})


class OAuthController(Controller):
    path = "/oauth"
    tags = ["oauth"]
    opt = {"exclude_from_auth": True}

    @get("/authorize", operation_id="oauthAuthorize", include_in_schema=False)
    async def authorize(self, request: Req) -> Template | Redirect:
        params = {k: request.query_params.getall(k) for k in request.query_params}
        language = pick_language(request, (params.get("ui_locales") or [None])[0])
        try:
            ask = await parse_authorize(params)
        except PageError as exc:
            return _error_page(language, exc)
        except RedirectError as exc:
            return _redirect(exc.redirect_uri, error=exc.error, error_description=exc.description, state=exc.state,
                             iss=issuer(request))
        signed_in = await signed_in_holder(request)
        here = request.url.path + "?" + request.url.query
        if signed_in is None:
            return Redirect(f"/oauth/login?next={quote(here, safe='')}", status_code=HTTP_303_SEE_OTHER)
        holder_id, session_id = signed_in
        holder = await get_holder(holder_id)
        async with connection() as conn:
            relink = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM sub_account WHERE holder = $1 AND partner = $2)", holder_id,
                ask.partner["id"],
            )
        t = strings(language)
        partner_name = ask.partner["name_en"] if language == "en" and ask.partner["name_en"] else ask.partner["name"]
        kind = t[f"kind_{ask.partner['kind']}"]
        consent_token = request.app.state.consent_tokens.issue(ConsentRequest(
            holder_id, session_id, ask.partner["id"], ask.redirect_uri, ask.scopes, ask.state, ask.code_challenge,
            language, ask.redirect_uri_given,
        ))
        csrf, cookie = csrf_cookie(request)
        return _page(
            "consent.html.j2", language, cookies=[cookie],
            title=t["consent_title"].format(partner=partner_name),
            lead=t["consent_lead"].format(partner=partner_name, kind=kind),
            signed_in_as=t["consent_as"].format(nickname=holder["nickname"]),
            scopes=scope_descriptions(ask.scopes, language), relink=relink, consent_token=consent_token,
            action="/oauth/authorize", switch_action="/oauth/logout", next=here, csrf=csrf,
        )

    @post("/authorize", operation_id="oauthDecide", include_in_schema=False, status_code=HTTP_303_SEE_OTHER)
    async def decide(self, request: Req, state: State) -> Template | Redirect:
        form = await request.form()
        language = pick_language(request, None)
        ask = state.consent_tokens.verify(str(form.get("consent_token", "")))
        if ask is None:
            return _error_page(language, PageError("err_expired"))
        language = ask.language
        signed_in = await signed_in_holder(request)
        if signed_in != (ask.holder_id, ask.session_id):
            return _error_page(language, PageError("err_session"))
        if not await state.redis.set(f"oauth:consent-used:{ask.token_id}", 1, nx=True, ex=CONSENT_TTL_S + 60):
            return _error_page(language, PageError("err_expired"))
        partner = await get_partner(ask.partner_id)
        if form.get("decision") != "approve":
            return _redirect(ask.redirect_uri, error="access_denied", error_description="The resident denied access.",
                             state=ask.state, iss=issuer(request))
        if partner["status"] != "active":
            return _redirect(ask.redirect_uri, error="unauthorized_client",
                             error_description="This partner platform is suspended.", state=ask.state,
                             iss=issuer(request))
        scopes = [s for s in ask.scopes if s in partner["allowed_scopes"]]
        if not scopes:
            return _redirect(ask.redirect_uri, error="invalid_scope", state=ask.state, iss=issuer(request),
                             error_description="None of the requested scopes is allowed for this client any more.")
        async with engine().transaction():
            link = await link_partner(ask.holder_id, partner["id"], scopes)
            code = await issue_code(
                partner_id=partner["id"], holder_id=ask.holder_id, sub_account_id=link.sub_account_id,
                # RFC 6749 §4.1.3: the token request repeats redirect_uri only if the authorization request had it.
                redirect_uri=ask.redirect_uri if ask.redirect_uri_given else "", scopes=scopes,
                code_challenge=ask.code_challenge,
                ttl_s=state.settings.authorization_code_ttl_s,
            )
        return _redirect(ask.redirect_uri, code=code, state=ask.state, iss=issuer(request))

    @get("/login", operation_id="oauthLoginPage", include_in_schema=False)
    async def login_page(self, request: Req, next_url: Annotated[str, Parameter(query="next")] = "") -> Template:
        next_url = _safe_next(next_url)
        language = pick_language(request, _ui_locales(next_url))
        csrf, cookie = csrf_cookie(request)
        return _page("login.html.j2", language, cookies=[cookie], action="/oauth/login", csrf=csrf,
                     next=next_url, login="", error=None)

    @post("/login", operation_id="oauthLogin", include_in_schema=False, status_code=HTTP_303_SEE_OTHER)
    async def login(self, request: Req, state: State) -> Template | Redirect:
        form = await request.form()
        next_url = _safe_next(str(form.get("next", "")))
        language = pick_language(request, _ui_locales(next_url))
        t = strings(language)
        login, password = str(form.get("login", ""))[:254], str(form.get("password", ""))[:128]
        csrf, cookie = csrf_cookie(request)

        def again(message: str, status: int) -> Template:
            return _page("login.html.j2", language, status=status, cookies=[cookie], action="/oauth/login",
                         csrf=csrf, next=next_url, login=login, error=message)

        if not csrf_ok(request, str(form.get("csrf", ""))):
            return again(t["login_expired"], 400)
        settings = state.settings
        ip = client_ip(request, settings)
        try:
            await state.rate_limiter.hit("login-ip", ip, settings.login_limit_per_ip)
            await state.rate_limiter.hit("login-account", login_subject(login), settings.login_limit_per_account)
            holder_id = await authenticate(state.passwords, login, password)
        except DomainError as exc:
            if exc.kind == "rate_limited":
                return again(t["login_rate_limited"], 429)
            if exc.kind == "unauthorized":
                return again(t["login_failed"], 401)
            raise
        await state.rate_limiter.reset("login-account", login_subject(login))
        rotation = await start_session(
            holder_id, device_name="Web: linking a partner", user_agent=request.headers.get("user-agent", ""), ip=ip,
            refresh_ttl_s=settings.refresh_token_ttl_s,
        )
        web_token, _ = state.web_tokens.issue(holder_id, rotation.session_id)
        return Redirect(next_url, status_code=HTTP_303_SEE_OTHER, cookies=[session_cookie(request, web_token)],
                        headers={"Cache-Control": "no-store"})

    @post("/logout", operation_id="oauthSwitchAccount", include_in_schema=False, status_code=HTTP_303_SEE_OTHER)
    async def logout(self, request: Req) -> Redirect:
        form = await request.form()
        next_url = _safe_next(str(form.get("next", "")))
        if csrf_ok(request, str(form.get("csrf", ""))):
            signed_in = await signed_in_holder(request)
            if signed_in is not None:
                await revoke_session(signed_in[0], signed_in[1], reason="logout")
        return Redirect(f"/oauth/login?next={quote(next_url, safe='')}", status_code=HTTP_303_SEE_OTHER,
                        cookies=[session_cookie(request, None)])

    @post("/token", operation_id="oauthToken", status_code=HTTP_200_OK, summary="Token endpoint (RFC 6749)",
          responses=_oauth_errors(400, 401, 429))
    async def token(self, request: Req, state: State) -> Response[TokenResponse]:
        """`application/x-www-form-urlencoded`. `grant_type=authorization_code` with `code`, `code_verifier`
        and `redirect_uri` (when the authorization request had one), or `grant_type=refresh_token` with
        `refresh_token` (and optionally a narrower `scope`), or `grant_type=client_credentials` (optional
        `scope=ledger:read`) for the partner's own token, without a resident or a refresh token. Confidential
        clients authenticate with HTTP Basic or `client_id` + `client_secret` in the body; public clients send
        `client_id` only. Errors follow RFC 6749 §5.2."""
        form = await request.form()
        settings = state.settings
        try:
            partner = await _client(request, form)
            await check_partner_limits(state, partner["id"], partner["rate_limit_per_minute"])
            grant_type = form.get("grant_type")
            tokens: GrantTokens
            if grant_type == "client_credentials":
                scopes = client_credentials_scopes(partner, form.get("scope"))
                own, _exp = state.partner_tokens.clients.issue(partner["client_id"], scopes)
                return Response(TokenResponse(access_token=own, token_type="Bearer",  # noqa: S106
                                              expires_in=state.partner_tokens.clients.ttl_s, scope=" ".join(scopes)),
                                headers=TOKEN_HEADERS)
            if grant_type == "authorization_code":
                tokens = await exchange_code(
                    partner["id"], str(form.get("code", "")), redirect_uri=form.get("redirect_uri"),
                    code_verifier=form.get("code_verifier"), refresh_ttl_s=settings.partner_refresh_token_ttl_s,
                )
            elif grant_type == "refresh_token":
                scope = form.get("scope")
                tokens = await rotate_refresh_token(
                    partner["id"], str(form.get("refresh_token", "")), scopes=scope.split() if scope else None,
                    refresh_ttl_s=settings.partner_refresh_token_ttl_s,
                )
            else:
                raise OAuthError("unsupported_grant_type",
                                 "grant_type must be authorization_code, refresh_token or client_credentials.")
        except OAuthError as exc:
            return oauth_error(request, exc)
        except DomainError as exc:
            if exc.kind != "rate_limited":
                raise
            return oauth_error(request, OAuthError("slow_down", exc.detail, status=429),
                               {"Retry-After": str(exc.extra.get("retry_after_s", 60))})
        access, _exp = state.partner_tokens.issue(
            tokens.sub_account_id, tokens.grant_id, partner["client_id"], tokens.scopes
        )
        return Response(
            TokenResponse(
                access_token=access, token_type="Bearer", expires_in=state.partner_tokens.ttl_s,  # noqa: S106
                refresh_token=tokens.refresh_token, scope=" ".join(tokens.scopes),
                sub_account_id=str(tokens.sub_account_id),
            ),
            headers=TOKEN_HEADERS,
        )

    @post("/revoke", operation_id="oauthRevoke", status_code=HTTP_200_OK, summary="Revoke a token (RFC 7009)",
          responses=_oauth_errors(400, 401))
    async def revoke(self, request: Req, state: State) -> Response[bytes]:
        """`application/x-www-form-urlencoded` `token` (refresh or access token) with client authentication.
        The whole grant ends: its refresh and access tokens stop working at once. Answers 200 for any token,
        valid or not, as RFC 7009 asks, so it reveals nothing."""
        form = await request.form()
        try:
            partner = await _client(request, form, allow_suspended=True)
        except OAuthError as exc:
            return oauth_error(request, exc)
        token = str(form.get("token", ""))
        if token.startswith(REFRESH_PREFIX):
            await revoke_refresh_token(partner["id"], token)
        elif token:
            try:
                claims = state.partner_tokens.verify(token)
            except DomainError:
                claims = None
            if claims is not None and claims.client_id == partner["client_id"]:
                await revoke_grant(partner["id"], claims.grant_id, reason="revoked-by-partner")
        return Response(b"", headers=TOKEN_HEADERS, media_type="text/plain")


def oauth_error(request: Req, exc: OAuthError, headers: dict[str, str] | None = None) -> Response[Any]:
    """RFC 6749 §5.2's body, which OAuth libraries parse, with RFC 9457's members beside it."""
    body = {"error": exc.error, "error_description": exc.description,
            **problem_body(request, exc.status, f"oauth-{exc.error}", exc.description)}
    all_headers = {**TOKEN_HEADERS, **(headers or {})}
    if exc.status == 401 and request.headers.get("authorization", "").lower().startswith("basic"):
        all_headers["WWW-Authenticate"] = 'Basic realm="carbon-wallet"'
    return Response(body, status_code=exc.status, media_type="application/json", headers=all_headers)


async def _client(request: Req, form: Any, *, allow_suspended: bool = False) -> dict[str, Any]:
    """Client authentication (RFC 6749 §2.3): HTTP Basic, or the body, or a public client's bare client_id.
    A suspended partner may still revoke its tokens (cleaning up is never refused), nothing else."""
    header = request.headers.get("authorization", "")
    body_id, body_secret = form.get("client_id"), form.get("client_secret")
    if header.lower().startswith("basic "):
        if body_secret is not None:
            raise OAuthError("invalid_request", "Authenticate with HTTP Basic or client_secret, not both.")
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True).decode()
            client_id, _, secret = raw.partition(":")
            client_id, secret = unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise OAuthError("invalid_client", "Malformed HTTP Basic credentials.", status=401) from exc
        if body_id is not None and body_id != client_id:
            raise OAuthError("invalid_request", "client_id in the body differs from the authenticated client.")
    else:
        client_id, secret = str(body_id or ""), body_secret
    if not client_id:
        raise OAuthError("invalid_client", "Client authentication is required (client_id).", status=401)
    partner = await authenticate_client(client_id, secret)
    if partner is None:
        raise OAuthError("invalid_client", "Unknown client or wrong client secret.", status=401)
    if partner["status"] != "active" and not allow_suspended:
        raise OAuthError("unauthorized_client", "This partner platform is suspended; contact Carbon Wallet.")
    return partner


def _ui_locales(next_url: str) -> str | None:
    """The login page speaks the language the partner asked the authorization request to use."""
    return parse_qs(urlsplit(next_url).query).get("ui_locales", [None])[0]


def _safe_next(value: str) -> str:
    """Only our own authorization endpoint may follow a login, so the login page is not an open redirector."""
    if value.startswith("/oauth/authorize?") and "\\" not in value and "//" not in value.split("?", 1)[0]:
        return value
    return "/oauth/authorize"


