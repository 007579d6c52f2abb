"""The token endpoint's wire protocol: one refresh_token grant, its retries and its error mapping."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from token_refresh import redact
from token_refresh.config import Credentials
from token_refresh.errors import ExitCode, ReauthorizationRequired, TokenEndpointError

if TYPE_CHECKING:
    from types import TracebackType

    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "token-refresh"


class BudgetRetry(Retry):
    """urllib3 ``Retry`` that gives up when the next wait would overrun a wall-clock deadline.

    ``Retry-After`` is honoured, but a server asking for longer than the budget allows
    ends the retries at once instead of keeping the lock for minutes.
    """

    deadline: float = math.inf

    def new(self, **kw: Any) -> BudgetRetry:
        retry = super().new(**kw)
        retry.deadline = self.deadline
        return retry

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> BudgetRetry:
        retry: BudgetRetry = super().increment(method, url, response, error, _pool, _stacktrace)
        wait = None
        if response is not None and self.respect_retry_after_header:
            wait = retry.get_retry_after(response)
        if wait is None:
            wait = retry.get_backoff_time()
        if time.monotonic() + wait > self.deadline:
            reason = error or ResponseError(f"retry budget exhausted (next wait {wait:g} s)")
            raise MaxRetryError(_pool, url or "", reason)  # type: ignore[arg-type]
        log.debug("retrying token request in %.1f s", wait)
        return retry


def new_session(*, retry_budget_secs: float) -> requests.Session:
    """A session whose adapter retries connection failures and 429/502/503/504 within the budget."""
    retry = BudgetRetry(
        total=10,
        connect=10,
        read=0,  # a read timeout may mean Saxo already spent the refresh token
        other=0,
        redirect=0,
        status=10,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"POST"}),
        backoff_factor=0.5,
        backoff_max=16,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    retry.deadline = time.monotonic() + retry_budget_secs
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _describe(error: str, description: object) -> str:
    text = error
    if isinstance(description, str) and description:
        # printable, bounded: a server's text ends up in a log line
        clean = "".join(c if c.isprintable() else "?" for c in description)[:200]
        text = f"{error}: {clean}"
    return text


def _body_summary(response: requests.Response) -> str:
    ctype = response.headers.get("Content-Type", "no content type").split(";")[0]
    return f"{ctype}, {len(response.content)} bytes"


def _json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_token_response(body: dict[str, Any] | None) -> str | None:
    """Return what is wrong with a 2xx body, or None when it is a usable token."""
    if body is None:
        return "not a JSON object"
    for field in ("access_token", "refresh_token"):
        value = body.get(field)
        if not isinstance(value, str) or not value:
            return f"{field!r} missing or not a non-empty string"
    expires_in = body.get("expires_in")
    if not isinstance(expires_in, (int, float)) or not _is_number(expires_in) or expires_in <= 0:
        return "'expires_in' missing or not a positive number"
    rt_expires_in = body.get("refresh_token_expires_in")
    if rt_expires_in is not None and not _is_number(rt_expires_in):
        return "'refresh_token_expires_in' not a number"
    return None


def interpret_response(response: requests.Response, *, grant: str = "refresh") -> dict[str, Any]:
    """Map a token-endpoint answer to the new token or to an error with its exit status."""
    status = response.status_code
    body = _json_object(response)
    error = body.get("error") if body else None
    error = error if isinstance(error, str) else None
    if body:
        # a well-formed answer holds fresh tokens; register them before anything can print them
        redact.register(body.get("access_token"), body.get("refresh_token"))
    detail = _describe(error, body.get("error_description") if body else None) if error else None
    where = f"HTTP {status}"

    if error == "invalid_grant":
        raise ReauthorizationRequired(f"Saxo rejected the {grant} grant ({where}, {detail})")
    if error in ("invalid_client", "unauthorized_client") or status in (401, 403):
        raise TokenEndpointError(
            f"Saxo rejected the client credentials ({where}, {detail or _body_summary(response)}); "
            "check the app key and secret, and that live/sim match",
            exit_code=ExitCode.CONFIG,
            status=status,
        )
    if status == 400:
        raise ReauthorizationRequired(
            f"Saxo refused the {grant} grant ({where}, {detail or _body_summary(response)})"
        )
    if status == 429 or 500 <= status <= 599:
        raise TokenEndpointError(
            f"token endpoint unavailable ({where}, {detail or _body_summary(response)})"
            f"{' after retries' if status in RETRY_STATUSES else ''}; try again later",
            exit_code=ExitCode.TEMPFAIL,
            status=status,
        )
    if 200 <= status <= 299:
        problem = validate_token_response(body)
        if problem is None:
            assert body is not None
            return body
        log.error(
            "token endpoint answered %s with an unusable body (%s: %s); "
            "the refresh token may already be spent",
            where,
            _body_summary(response),
            problem,
        )
        raise TokenEndpointError(
            f"unusable token response ({where}, {problem})",
            exit_code=ExitCode.TEMPFAIL,
            status=status,
        )
    location = " (redirect; check token_url)" if 300 <= status <= 399 else ""
    raise TokenEndpointError(
        f"token endpoint answered {where}{location} ({detail or _body_summary(response)}); check token_url",
        exit_code=ExitCode.CONFIG,
        status=status,
    )


def post_token_request(
    session: requests.Session,
    *,
    token_url: str,
    form: dict[str, str],
    credentials: Credentials | None,
    timeout: float,
    grant: str = "refresh",
) -> dict[str, Any]:
    """POST a grant to the token endpoint and return the validated token JSON."""
    auth = None
    if credentials is not None:
        redact.register_basic_auth(credentials.app_key, credentials.app_secret)
        auth = (credentials.app_key, credentials.app_secret)
    try:
        response = session.post(
            token_url,
            data=form,
            auth=auth,
            headers={"Accept": "application/json"},
            timeout=timeout,
            allow_redirects=False,  # requests would resend the POST as a GET
        )
    except requests.exceptions.RequestException as e:
        if _is_read_timeout(e):
            log.error(
                "no answer from the token endpoint within %g s; the refresh token may already be spent",
                timeout,
            )
            raise TokenEndpointError(
                f"token endpoint did not answer within {timeout:g} s", exit_code=ExitCode.TEMPFAIL
            ) from None
        raise TokenEndpointError(
            f"cannot reach the token endpoint {token_url}: {_reason(e)}",
            exit_code=ExitCode.TEMPFAIL,
        ) from None
    return interpret_response(response, grant=grant)


def _is_read_timeout(error: requests.exceptions.RequestException) -> bool:
    """Whether the request was sent but no answer came in time.

    With ``Retry(read=0)`` urllib3 reports a read timeout as ``MaxRetryError``, which requests
    wraps as ``ConnectionError``, not ``ReadTimeout``.
    """
    from urllib3.exceptions import ReadTimeoutError

    if isinstance(error, requests.exceptions.ReadTimeout):
        return True
    inner = error.args[0] if error.args else None
    return isinstance(getattr(inner, "reason", None), ReadTimeoutError)


def _reason(error: BaseException) -> str:
    """The innermost cause of a requests/urllib3 failure, in one short phrase."""
    seen = error
    while True:
        inner = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if isinstance(inner, BaseException) and inner is not seen:
            seen = inner
            continue
        break
    text = str(seen).split(": ", 1)[-1] if str(seen) else ""
    return f"{type(seen).__name__}: {text}"[:200] if text else type(seen).__name__


def refresh_grant(
    session: requests.Session,
    *,
    token_url: str,
    refresh_token: str,
    credentials: Credentials,
    timeout: float,
) -> dict[str, Any]:
    """Spend ``refresh_token`` for a new token (Saxo rotates the refresh token every time)."""
    redact.register(refresh_token)
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return post_token_request(
        session, token_url=token_url, form=form, credentials=credentials, timeout=timeout
    )
