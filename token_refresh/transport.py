"""HTTP for the token endpoint: the only module that imports requests and urllib3.

``Retrying`` is the retry budget over an injected one-shot ``send``, clock and sleep, so its
policy is tested without sockets or sleeps. ``RequestsSend`` is one attempt over requests with
one deadline for the whole request and a cap on the body (docs/DESIGN.md, "HTTP").
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple, Protocol

from token_refresh.errors import EndpointUnreachable, NoAnswer, UnusableResponse

if TYPE_CHECKING:
    import requests

__all__ = [
    "MAX_BODY_BYTES",
    "RETRY_STATUSES",
    "ConnectFailed",
    "Flight",
    "Request",
    "RequestsSend",
    "Response",
    "Retrying",
    "Transport",
    "new_transport",
]

log = logging.getLogger(__name__)

# 502 and 504 are not here: a gateway that forwarded the request may have had the grant made
# behind it, and a resend would spend the refresh token twice (docs/DESIGN.md, "HTTP")
RETRY_STATUSES = frozenset({429, 503})
MAX_BODY_BYTES = 8 << 20  # a token response is about 2 KB; this only guards memory
MAX_ATTEMPTS = 10
BACKOFF_FACTOR = 0.5
BACKOFF_MAX = 16.0
USER_AGENT = "token-refresh"


class Request(NamedTuple):
    """One HTTP request; ``form`` is sent url-encoded as the body."""

    method: str
    url: str
    headers: Mapping[str, str]
    form: Mapping[str, str] | None
    timeout: float  # the whole request: connect, send, headers and body


class Response(NamedTuple):
    """A complete answer; header names are lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """What the endpoint protocol needs: send a request, get a complete answer or an error."""

    def __call__(self, request: Request) -> Response: ...


class Flight(Protocol):
    """Told when a request goes out and when a retry makes it moot (the stop-signal guard)."""

    def sent(self) -> None: ...

    def landed(self) -> None: ...


class _NoFlight:
    def sent(self) -> None:
        pass

    def landed(self) -> None:
        pass


class ConnectFailed(Exception):
    """No connection was made: nothing was sent, so a retry cannot spend anything."""


Send = Callable[[Request], Response]


def backoff(retry: int) -> float:
    """Seconds before retry number ``retry`` (1-based): none, then 1, 2, 4 ... up to 16."""
    return 0.0 if retry <= 1 else min(BACKOFF_MAX, BACKOFF_FACTOR * 2 ** (retry - 1))


def retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (delta-seconds or an HTTP date), else None."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, number)
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment.timestamp() - now)


class Retrying:
    """Retry connection failures and 429/503 within a wall-clock budget; never anything else.

    A read timeout or a broken answer is never retried: the endpoint may have spent the refresh
    token already (docs/DESIGN.md, "HTTP").
    """

    def __init__(
        self,
        send: Send,
        *,
        budget: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        flight: Flight | None = None,
    ) -> None:
        self.send = send
        self.budget = budget
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.flight = flight or _NoFlight()
        self.attempts = 0
        self.elapsed = 0.0

    def __call__(self, request: Request) -> Response:
        start = self.clock()
        deadline = start + self.budget
        retry = 0
        while True:
            self.attempts += 1
            try:
                response = self.send(request)
                reason = None
            except ConnectFailed as e:
                response, reason = None, str(e)
            finally:
                self.elapsed = self.clock() - start
            if response is not None and response.status not in RETRY_STATUSES:
                return response
            retry += 1
            wait = backoff(retry)
            if response is not None:
                wait = retry_after(response.headers, now=self.wall_clock()) or wait
            if self.attempts >= MAX_ATTEMPTS or self.clock() + wait > deadline:
                if response is not None:
                    return response
                raise EndpointUnreachable(
                    f"{reason} ({self.attempts} attempt{'s' if self.attempts > 1 else ''} "
                    f"over {self.elapsed:.1f} s)"
                )
            self.flight.landed()  # nothing was spent: a stop signal may end the run now
            what = f"HTTP {response.status}" if response is not None else reason
            log.debug("attempt %d: %s; retrying in %.1f s", self.attempts, what, wait)
            self.sleep(wait)


# -- one attempt over requests --------------------------------------------------------------


def _reason(error: BaseException) -> str:
    """The innermost cause of a requests/urllib3 failure, in one short phrase."""
    from token_refresh import fmt

    seen = error
    for _ in range(10):
        inner = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if not isinstance(inner, BaseException) or inner is seen:
            break
        seen = inner
    text = str(seen).split(": ", 1)[-1] if str(seen) else ""
    return fmt.printable(f"{type(seen).__name__}: {text}" if text else type(seen).__name__)


class _DeadlinePassed(BaseException):
    """Raised by the SIGALRM watchdog; a BaseException so no library can swallow it."""


class RequestsSend:
    """One attempt: requests with no redirects, one deadline over the whole request, a body cap."""

    def __init__(self, session: requests.Session | None = None, *, flight: Flight | None = None) -> None:
        import requests

        self.session = session or _new_session()
        self.flight = flight or _NoFlight()
        self._requests = requests

    def __call__(self, request: Request) -> Response:
        requests = self._requests
        deadline = time.monotonic() + request.timeout
        connected: list[bool] = []

        def on_connected() -> None:
            connected.append(True)
            self.flight.sent()

        _CONNECTED[0] = on_connected
        try:
            with _watchdog(request.timeout):
                try:
                    r = self.session.request(
                        request.method,
                        request.url,
                        data=dict(request.form) if request.form is not None else None,
                        headers=dict(request.headers),
                        timeout=request.timeout,
                        allow_redirects=False,  # requests would resend the POST as a GET
                        stream=True,
                    )
                except requests.exceptions.RequestException as e:
                    # only a failure before the connection was made is sure to have sent nothing
                    if not connected:
                        raise ConnectFailed(_reason(e)) from None
                    raise NoAnswer(_reason(e)) from None
                try:
                    body = self._read(r, deadline)
                finally:
                    r.close()
        except _DeadlinePassed:
            raise NoAnswer(f"the token endpoint did not answer within {request.timeout:g} s") from None
        finally:
            _CONNECTED[0] = None
            # a fresh connection for every attempt: the connect hook is what marks a request as
            # sent (docs/DESIGN.md, "Stop signals"), so no attempt may ride on a kept-alive one
            self.session.close()
        headers = {k.lower(): v for k, v in r.headers.items()}
        return Response(r.status_code, headers, body)

    def _read(self, r: requests.Response, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in r.iter_content(chunk_size=65536):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise UnusableResponse(
                        f"the body is larger than {MAX_BODY_BYTES >> 20} MiB", status=r.status_code
                    )
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise _DeadlinePassed
        except self._requests.exceptions.RequestException as e:
            raise NoAnswer(f"the answer broke off: {_reason(e)}", status=r.status_code) from None
        return b"".join(chunks)


# Set while a RequestsSend runs: the pool's connections call it once connected, i.e. just
# before the first byte of the request goes out (docs/DESIGN.md, "Stop signals").
_CONNECTED: list[Callable[[], None] | None] = [None]


def _new_session() -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Conn(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            if _CONNECTED[0] is not None:
                _CONNECTED[0]()

    class SConn(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            if _CONNECTED[0] is not None:
                _CONNECTED[0]()

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class SPool(HTTPSConnectionPool):
        ConnectionCls = SConn

    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.trust_env = True  # HTTPS_PROXY and REQUESTS_CA_BUNDLE, as operators expect
    adapter = HTTPAdapter(max_retries=0)  # Retrying decides
    adapter.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": SPool}
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class _watchdog:
    """SIGALRM after ``seconds`` raises _DeadlinePassed in the main thread; elsewhere a no-op."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.previous: object = None
        self.armed = False

    def __enter__(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return

        def fire(signum: int, frame: object) -> None:
            raise _DeadlinePassed

        self.previous = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, max(self.seconds, 0.001))
        self.armed = True

    def __exit__(self, *exc: object) -> None:
        if not self.armed:
            return
        import signal

        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)  # type: ignore[arg-type]


def new_transport(*, retry_budget_secs: float, flight: Flight | None = None) -> Transport:
    """The production transport: requests, one deadline per attempt, retries within the budget."""
    return Retrying(RequestsSend(flight=flight), budget=retry_budget_secs, flight=flight)
