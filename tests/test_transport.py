"""HTTP for the token endpoint: the retry policy in-process, and one attempt over real HTTP on 127.0.0.1.

``Retrying`` runs over a scripted ``send`` with a fake clock whose ``sleep`` only moves time on, so
the backoff and Retry-After arithmetic is exact and takes no time. ``RequestsSend`` talks to the
fake Saxo endpoint and to small misbehaving servers; the two slow cases take about 1 s each.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from contextlib import contextmanager
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Union

import pytest
from fake_saxo import FakeSaxo, basic_header

from token_refresh import transport
from token_refresh.errors import EndpointUnreachable, ExitCode, NoAnswer, UnusableResponse
from token_refresh.transport import ConnectFailed, Request, RequestsSend, Response, Retrying

WALL = 1_700_000_000.0  # the fake wall clock, for Retry-After HTTP dates
REQUEST = Request("POST", "https://sim.example/token", {}, {"grant_type": "refresh_token"}, 5.0)


class Timeline:
    """A fake monotonic clock, a sleep that only moves it on, and the Flight: all of it in ``events``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.events: list[str] = []
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.events.append(f"sleep {seconds:g}")
        self.now += seconds

    def sent(self) -> None:
        self.events.append("sent")

    def landed(self) -> None:
        self.events.append("landed")


Outcome = Union[Response, BaseException]


class Script:
    """A one-shot ``send`` that plays ``outcomes`` in order; each attempt takes ``took`` seconds."""

    def __init__(self, timeline: Timeline, outcomes: list[Outcome], took: float = 0.0) -> None:
        self.timeline = timeline
        self.outcomes = list(outcomes)
        self.took = took
        self.calls = 0

    def __call__(self, request: Request) -> Response:
        assert request is REQUEST
        self.calls += 1
        self.timeline.events.append("send")
        self.timeline.now += self.took
        assert self.outcomes, "Retrying made more attempts than scripted"
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def status(code: int, retry_after: str | None = None) -> Response:
    headers = {"content-type": "application/json"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    return Response(code, headers, b"{}")


OK = Response(201, {"content-type": "application/json"}, b'{"access_token": "eyJ"}')
REFUSED = ConnectFailed("ConnectionRefusedError: [Errno 111] Connection refused")


def retrying(timeline: Timeline, outcomes: list[Outcome], *, budget: float, took: float = 0.0) -> Retrying:
    return Retrying(
        Script(timeline, outcomes, took),
        budget=budget,
        clock=timeline.clock,
        wall_clock=lambda: WALL,
        sleep=timeline.sleep,
        flight=timeline,
    )


def http_date(offset: float) -> str:
    return formatdate(WALL + offset, usegmt=True)


# -- Retrying: the retry budget ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "retry_after", "wait"),
    [
        (503, "2", 2.0),
        (429, "2", 2.0),
        (503, "1.5", 1.5),
        (503, http_date(3), 3.0),
        (429, http_date(3), 3.0),
    ],
)
def test_retry_after_is_honoured_then_success(code: int, retry_after: str, wait: float) -> None:
    timeline = Timeline()
    send = retrying(timeline, [status(code, retry_after), status(code, retry_after), OK], budget=10)
    assert send(REQUEST) is OK
    assert timeline.events == [
        *["send", "landed", f"sleep {wait:g}"] * 2,
        "send",  # no landed() after the final answer: the token may be spent
    ]
    assert (send.attempts, send.elapsed) == (3, 2 * wait)


@pytest.mark.parametrize("retry_after", ["120", "11", http_date(120)])
def test_retry_after_beyond_the_budget_returns_the_answer_at_once(retry_after: str) -> None:
    timeline = Timeline()
    unavailable = status(503, retry_after)
    send = retrying(timeline, [unavailable], budget=10)
    assert send(REQUEST) is unavailable
    assert timeline.events == ["send"]
    assert send.attempts == 1


@pytest.mark.parametrize("retry_after", [None, "", "soon", "0", "-3", http_date(-60)])
def test_unusable_retry_after_falls_back_to_backoff(retry_after: str | None) -> None:
    timeline = Timeline()
    send = retrying(timeline, [status(503, retry_after), status(503, retry_after), OK], budget=10)
    assert send(REQUEST) is OK
    assert timeline.sleeps == [0.0, 1.0]


@pytest.mark.parametrize(
    ("budget", "took", "sleeps", "message"),
    [
        (10, 0.0, [0, 1, 2, 4], "(5 attempts over 7.0 s)"),
        (40, 0.0, [0, 1, 2, 4, 8, 16], "(7 attempts over 31.0 s)"),
        (0.5, 0.0, [0], "(2 attempts over 0.0 s)"),
        (10, 1.0, [0, 1, 2], "(4 attempts over 7.0 s)"),  # time spent connecting counts
        (2, 3.0, [], "(1 attempt over 3.0 s)"),
    ],
)
def test_connect_failures_back_off_then_the_endpoint_is_unreachable(
    budget: float, took: float, sleeps: list[float], message: str
) -> None:
    timeline = Timeline()
    send = retrying(timeline, [REFUSED] * 20, budget=budget, took=took)
    with pytest.raises(EndpointUnreachable) as info:
        send(REQUEST)
    assert info.value.exit_code == ExitCode.TEMPFAIL
    assert "cannot reach the token endpoint: ConnectionRefusedError" in str(info.value)
    assert message in str(info.value)
    assert "nothing was spent" in str(info.value)
    assert timeline.sleeps == sleeps
    assert timeline.events == [*(e for s in sleeps for e in ("send", "landed", f"sleep {s:g}")), "send"]


@pytest.mark.parametrize("failure", [REFUSED, status(503), status(429, "1")], ids=["refused", "503", "429"])
def test_attempts_are_capped(failure: Outcome) -> None:
    timeline = Timeline()
    send = retrying(timeline, [failure] * 20, budget=10_000)
    if isinstance(failure, BaseException):
        with pytest.raises(EndpointUnreachable, match="10 attempts"):
            send(REQUEST)
    else:
        assert send(REQUEST) is failure  # the last answer, for the endpoint to report
    assert send.attempts == transport.MAX_ATTEMPTS == 10
    assert timeline.events.count("send") == 10
    assert timeline.events.count("landed") == 9
    if failure is REFUSED:
        assert timeline.sleeps == [0, 1, 2, 4, 8, 16, 16, 16, 16]


@pytest.mark.parametrize("code", [429, 503])
def test_busy_statuses_are_retried(code: int) -> None:
    timeline = Timeline()
    send = retrying(timeline, [status(code), OK], budget=10)
    assert send(REQUEST) is OK
    assert timeline.events == ["send", "landed", "sleep 0", "send"]


# 502 and 504: a gateway forwarded the request, so the grant may have been made behind it
@pytest.mark.parametrize("code", [200, 201, 204, 302, 400, 401, 403, 404, 500, 501, 502, 504, 505])
def test_other_statuses_are_never_retried(code: int) -> None:
    timeline = Timeline()
    answer = status(code, "1")
    send = retrying(timeline, [answer, OK], budget=10)
    assert send(REQUEST) is answer
    assert timeline.events == ["send"]
    assert send.attempts == 1


@pytest.mark.parametrize(
    "failure",
    [NoAnswer("ReadTimeout: read timed out"), UnusableResponse("the body is larger than 8 MiB", status=200)],
    ids=["no-answer", "too-large"],
)
def test_failures_after_sending_are_never_retried(failure: Exception) -> None:
    timeline = Timeline()
    send = retrying(timeline, [failure, OK], budget=100)
    with pytest.raises(type(failure)) as info:
        send(REQUEST)
    assert info.value is failure
    assert timeline.events == ["send"]
    assert send.attempts == 1


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("", None),
        ("soon", None),
        (http_date(30), 30.0),
        (http_date(-30), 0.0),
        ("Wed, 31 Nov 2023 99:00:00 GMT", None),
        pytest.param(
            "\xb2",  # "²": what a latin-1 header byte 0xB2 decodes to
            None,
            id="superscript-two",
        ),
    ],
)
def test_retry_after_header(value: str, seconds: float | None) -> None:
    assert transport.retry_after({"retry-after": value}, now=WALL) == seconds


# -- RequestsSend: one attempt over real HTTP ----------------------------------------------


class Recorder:
    """A Flight that remembers its calls."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def sent(self) -> None:
        self.events.append("sent")

    def landed(self) -> None:
        self.events.append("landed")


Respond = Callable[[BaseHTTPRequestHandler, threading.Event], None]


@contextmanager
def serve(respond: Respond) -> Iterator[str]:
    """A server on 127.0.0.1 answering every POST with ``respond``; yields the token URL.

    ``respond`` gets an event set at teardown, so a handler that stalls ends with the test.
    """
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                respond(self, stop)
            except OSError:
                self.close_connection = True  # the client gave up first

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def headers_then(handler: BaseHTTPRequestHandler, length: int) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(length))
    handler.end_headers()
    handler.wfile.flush()


def basic(saxo: FakeSaxo) -> str:
    assert saxo.app_secret is not None
    return basic_header(saxo.app_key, saxo.app_secret)


def post(url: str, timeout: float = 1.0) -> Request:
    return Request("POST", url, {"Accept": "application/json"}, {"grant_type": "refresh_token"}, timeout)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours *_PROXY (trust_env): keep 127.0.0.1 direct whatever the caller's environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_success_sends_the_form_and_returns_the_answer(saxo: FakeSaxo) -> None:
    refresh_token = saxo.seed_cache()["refresh_token"]
    flight = Recorder()
    alarm_handler = signal.getsignal(signal.SIGALRM)
    request = Request(
        "POST",
        saxo.token_url,
        {"Authorization": basic(saxo), "Accept": "application/json"},
        {"grant_type": "refresh_token", "refresh_token": refresh_token},
        5.0,
    )
    response = RequestsSend(flight=flight)(request)
    assert response.status == 201
    assert response.headers["content-type"] == "application/json"
    assert all(name == name.lower() for name in response.headers)
    assert json.loads(response.body)["refresh_token"] == saxo.current_refresh
    (seen,) = saxo.requests
    assert seen["content_type"] == "application/x-www-form-urlencoded"
    assert (seen["grant_type"], seen["refresh_token"], seen["auth_ok"]) == (
        "refresh_token",
        refresh_token,
        True,
    )
    assert flight.events == ["sent"]
    # the whole-request watchdog is disarmed: no alarm can hit whatever the run does next
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) == alarm_handler


def test_connection_refused_is_a_connect_failure_and_nothing_was_sent() -> None:
    flight = Recorder()
    with socket.socket() as reserved:  # bound, never listening: connecting is refused
        reserved.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{reserved.getsockname()[1]}/token"
        started = time.monotonic()
        with pytest.raises(ConnectFailed, match="refused"):
            RequestsSend(flight=flight)(post(url))
    assert time.monotonic() - started < 1.0  # refused at once: no backoff inside one attempt
    assert flight.events == []


def test_a_silent_server_gives_no_answer_within_the_timeout() -> None:
    flight = Recorder()
    seen_on_arrival: list[list[str]] = []

    def silent(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        seen_on_arrival.append(list(flight.events))
        stop.wait(10)

    with serve(silent) as url:
        started = time.monotonic()
        with pytest.raises(NoAnswer) as info:
            RequestsSend(flight=flight)(post(url, timeout=1.0))
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5  # about the 1 s timeout, with room for a loaded machine
    assert info.value.exit_code == ExitCode.TEMPFAIL
    assert "spent" in str(info.value)
    assert seen_on_arrival == [["sent"]]  # sent() came before the request reached the server
    assert flight.events == ["sent"]


def test_a_dripping_body_hits_the_whole_request_deadline() -> None:
    def drip(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        headers_then(handler, 100)
        for _ in range(100):  # 20 s in all, each byte well inside a per-read timeout
            if stop.wait(0.2):
                return
            handler.wfile.write(b" ")
            handler.wfile.flush()

    with serve(drip) as url:
        started = time.monotonic()
        with pytest.raises(NoAnswer, match="1 s") as info:
            RequestsSend()(post(url, timeout=1.0))
        elapsed = time.monotonic() - started
    assert elapsed < 2.5  # per-read timeouts alone would let it run 20 s
    assert info.value.exit_code == ExitCode.TEMPFAIL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def _close_before_answering(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    handler.close_connection = True


def _close_mid_body(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    headers_then(handler, 100)
    handler.wfile.write(b'{"access_token": ')
    handler.close_connection = True


@pytest.mark.parametrize("respond", [_close_before_answering, _close_mid_body], ids=["no-answer", "mid-body"])
def test_a_connection_closed_after_sending_is_no_answer_not_a_connect_failure(respond: Respond) -> None:
    flight = Recorder()
    with serve(respond) as url, pytest.raises(NoAnswer) as info:
        RequestsSend(flight=flight)(post(url, timeout=2.0))
    assert not isinstance(info.value, ConnectFailed)
    assert "spent" in str(info.value)
    assert flight.events == ["sent"]


@pytest.mark.parametrize(("size", "usable"), [(1000, True), (1001, False), (5000, False)])
def test_the_body_is_capped(monkeypatch: pytest.MonkeyPatch, size: int, usable: bool) -> None:
    monkeypatch.setattr(transport, "MAX_BODY_BYTES", 1000)

    def big(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        headers_then(handler, size)
        handler.wfile.write(b"x" * size)

    with serve(big) as url:
        if usable:
            assert RequestsSend()(post(url)).body == b"x" * size
        else:
            with pytest.raises(UnusableResponse) as info:
                RequestsSend()(post(url))
            assert info.value.status == 200
            assert info.value.exit_code == ExitCode.TEMPFAIL
            assert "larger than" in str(info.value)


def test_a_redirect_is_returned_not_followed(saxo: FakeSaxo) -> None:
    saxo.fault = "redirect"
    response = RequestsSend()(post(saxo.token_url))
    assert response.status == 302
    assert response.headers["location"] == "https://example.invalid/token"
    assert len(saxo.requests) == 1


def test_every_attempt_tells_the_flight_it_was_sent(saxo: FakeSaxo) -> None:
    refresh_token = saxo.seed_cache()["refresh_token"]
    saxo.fault, saxo.fault_arg, saxo.fault_limit = "503", 0, 1  # one 503 with Retry-After: 0, then normal
    flight = Recorder()
    send = Retrying(RequestsSend(flight=flight), budget=5, flight=flight)
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    response = send(Request("POST", saxo.token_url, {"Authorization": basic(saxo)}, form, 5.0))
    assert response.status == 201
    assert len(saxo.requests) == 2
    assert flight.events == ["sent", "landed", "sent"]
