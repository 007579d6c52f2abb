"""Getting the redirect back to ``authorize``: a loopback listener, a pasted URL, a browser."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, TextIO
from urllib.parse import urlsplit

from token_refresh import redact
from token_refresh.errors import (
    AuthorizationTimeout,
    ListenerUnavailable,
    RedirectMismatch,
    TokenRefreshError,
)
from token_refresh.oauth import Redirect, listen_address, parse_redirect

__all__ = ["open_browser", "read_pasted", "wait_for_redirect"]

log = logging.getLogger(__name__)

MAX_PASTE_BYTES = 64 * 1024  # a redirect URL is well under 1 KiB; stop reading garbage early

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>token-refresh</title></head>
<body><h1>{title}</h1><p>{text}</p></body></html>
"""


def wait_for_redirect(
    redirect_uri: str,
    *,
    timeout: float,
    on_redirect: Callable[[Redirect], str],
    ready: Callable[[], None] = lambda: None,
) -> None:
    """Serve the redirect path on 127.0.0.1 until one redirect is handled or ``timeout`` passes.

    ``on_redirect`` does the work and returns the text shown in the browser; an exception it
    raises is shown there too, then re-raised here. ``ready`` runs once the port is bound.
    """
    import html
    from http.server import BaseHTTPRequestHandler, HTTPServer

    address = listen_address(redirect_uri)
    assert address is not None
    host, port, path = address
    outcome: list[BaseException | str] = []

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a connection that never sends its request cannot hold the listener

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # the path only: a query may hold a code nobody has registered yet
            log.debug("listener: %s %s -> %s", self.command, urlsplit(self.path).path, code)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("listener: a request was refused (%s)", type(self).__name__)

        def _page(self, status: int, title: str, text: str) -> None:
            body = PAGE.format(title=html.escape(title), text=html.escape(redact.redact(text))).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != path:
                self._page(404, "Not found", "token-refresh serves only its redirect path.")
                return
            redirect = parse_redirect("?" + parts.query)
            if redirect.code is None and redirect.error is None:
                self._page(400, "No authorization code", "This request carries no code; still waiting.")
                return
            try:
                message = on_redirect(redirect)
            except RedirectMismatch as e:
                # not this login's redirect (no or another state): refuse it and keep waiting
                log.warning("listener: ignored a redirect that does not answer this request")
                self._page(400, "Not this login", f"{e}. Still waiting for the real redirect.")
                return
            except BaseException as e:  # shown in the browser, re-raised in the main thread
                outcome.append(e)
                shown = str(e) if isinstance(e, TokenRefreshError) else "unexpected error"
                self._page(400, "Authorization failed", f"{shown}. See the terminal.")
                return
            outcome.append(message)
            self._page(200, "Authorization complete", f"{message}. You can close this tab.")

    try:
        server = HTTPServer((host, port), Handler)
    except OSError as e:
        raise ListenerUnavailable(f"{host}:{port}", str(e.strerror or e)) from None
    deadline = time.monotonic() + timeout
    try:
        log.info("waiting up to %g s for the browser to be redirected to %s", timeout, redirect_uri)
        ready()
        while not outcome:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AuthorizationTimeout(timeout)
            server.timeout = min(left, 1.0)
            server.handle_request()
    finally:
        server.server_close()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]


def read_pasted(stream: TextIO, *, timeout: float) -> str:
    """The first non-empty line of ``stream``, waiting at most ``timeout`` seconds."""
    import select

    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    buffer = b""
    while True:
        line, newline, rest = buffer.partition(b"\n")
        if newline and line.strip():
            break
        if newline:
            buffer = rest
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise AuthorizationTimeout(timeout)
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            if buffer.strip():
                line = buffer
                break
            raise RedirectMismatch("end of input before a redirect URL or code was pasted; nothing was saved")
        buffer += chunk
        if len(buffer) > MAX_PASTE_BYTES:
            raise RedirectMismatch(
                f"more than {MAX_PASTE_BYTES} bytes without a line end: not a redirect URL"
            )
    text = line.decode("utf-8", "replace").strip()
    redact.register(text)  # it holds the code
    return text


def open_browser(url: str) -> None:
    """Start the browser in the background: a console browser blocks until it quits."""
    import threading
    import webbrowser

    def run() -> None:
        try:
            opened = webbrowser.open(url)
        except Exception as e:  # a broken browser setup must not end the login
            log.debug("webbrowser failed: %s", e)
            opened = False
        if not opened:
            log.warning("could not start a browser; open the URL above yourself")

    threading.Thread(target=run, name="browser", daemon=True).start()
