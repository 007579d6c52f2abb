"""Command line: arguments, logging, and the one place where errors become exit statuses."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Sequence

from token_refresh import __version__, redact
from token_refresh.errors import ExitCode, ReauthorizationRequired, TokenRefreshError

if TYPE_CHECKING:
    import requests

    from token_refresh.cycle import Outcome

log = logging.getLogger("token_refresh")

SUBCOMMANDS = ("run", "status")
EXIT_TABLE = """\
exit status:
  0   token valid, or refreshed and saved
  2   command-line usage error
  65  cache unreadable as a token (not JSON, not an object, a field missing or wrong)
  66  cache file missing or not readable
  70  unexpected internal error (traceback with -v)
  74  the new cache could not be written (checked before the token is spent)
  75  temporary failure: network, timeout, 429/5xx, unusable 2xx body, lock busy
  77  re-authorization required: invalid_grant, another 400, or the token expired
  78  configuration error: config file, credentials, 401/403/invalid_client,
      a redirect, 404 or another 4xx from the token URL
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config file (default: $TOKEN_REFRESH_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--cache",
        metavar="PATH",
        help="token cache file (overrides $AEGIS_SAXO_TOKEN_CACHE_PATH and cache_path)",
    )


def _help_width() -> int:
    """The width argparse would get from ``shutil.get_terminal_size()``, without importing shutil."""
    # argparse builds a formatter for every argument it adds; left to size itself it imports
    # shutil, and with it bz2, lzma and zlib: 2 ms of every run (issue 7)
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0 and sys.__stdout__ is not None:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (ValueError, OSError):
            columns = 0
    return (columns or 80) - 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; ``run`` is the default subcommand."""
    width = _help_width()
    raw = functools.partial(argparse.RawDescriptionHelpFormatter, width=width)
    plain = functools.partial(argparse.HelpFormatter, width=width)
    parser = argparse.ArgumentParser(
        prog="token-refresh",
        description="Keep a Saxo Bank OpenAPI OAuth2 token cache fresh: one cycle per invocation.",
        epilog=EXIT_TABLE,
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,status}")
    run = sub.add_parser(
        "run",
        help="refresh the token if it would not survive until the next run (default)",
        description="Load the cache, classify the token and refresh it under a lock if it is due.",
        epilog=EXIT_TABLE,
        formatter_class=raw,
    )
    _add_common(run)
    run.add_argument("--force", action="store_true", help="refresh even if the token is valid")
    run.add_argument(
        "--dry-run", action="store_true", help="classify and say what would happen; no network, no write"
    )
    noise = run.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="debug detail and tracebacks")
    noise.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    status = sub.add_parser(
        "status",
        help="show the cache's state; no lock, no network, no write, no credentials",
        description=(
            "Show the token's state. Exit 0 when the access token works, 75 when it has expired "
            "but a run can refresh it, 77 when a person must re-authorize, 65/66 for a bad cache."
        ),
        formatter_class=plain,
    )
    _add_common(status)
    status.add_argument("--json", action="store_true", help="one JSON object instead of text")
    return parser


def _setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = redact.RedactingFormatter(
        "%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _left(seconds: float | None) -> str:
    return "unknown" if seconds is None else f"{seconds:.0f} s"


def _summary(outcome: Outcome) -> str:
    from token_refresh.freshness import State

    a = outcome.assessment
    left = f"access token {_left(a.access_left)} left"
    left += f", refresh token {_left(a.refresh_left)} left" if a.has_refresh_token else ", no refresh token"
    where = f"(cache {outcome.path})"
    if outcome.action == "refreshed":
        token = outcome.token
        names = (
            f"access {redact.fingerprint(token.access_token)}, "
            f"refresh {redact.fingerprint(token.refresh_token)}"
        )
        return f"token refreshed: {left} [{names}] {where}"
    if outcome.action == "refreshed_by_other":
        return f"token valid: refreshed by another run while this one waited; {left} {where}"
    if outcome.action == "would_refresh":
        verdict = "needs refresh" if a.state is State.NEEDS_REFRESH else "valid"
        return f"dry run: token {verdict} ({a.reason}); would refresh; {left} {where}"
    return f"token valid: {left} {where}"


def _session_factory(retry_budget_secs: float) -> requests.Session:
    from token_refresh import saxo

    return saxo.new_session(retry_budget_secs=retry_budget_secs)


def _cmd_run(args: argparse.Namespace) -> int:
    from token_refresh.config import load_config, load_credentials
    from token_refresh.cycle import run_cycle

    config = load_config(args.config, cache_override=args.cache)
    credentials = load_credentials(config.environment)
    redact.register(credentials.app_secret)
    log.debug("config from %s; cache %s; token_url %s", config.source, config.cache_path, config.token_url)
    outcome = run_cycle(
        config=config,
        credentials=credentials,
        clock=time.time,
        session_factory=lambda: _session_factory(config.retry_budget_secs),
        force=args.force,
        dry_run=args.dry_run,
    )
    a = outcome.assessment
    if a.issued_in_future:
        log.warning("issued_at of the token read was more than 300 s in the future; check the clocks")
    if not a.has_refresh_token:
        log.warning(
            "the token has no refresh token (a 24-hour developer token?); it stops working in %s",
            _left(a.access_left),
        )
    log.info("%s", _summary(outcome))
    return ExitCode.OK


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from token_refresh import status
    from token_refresh.config import load_config

    config = load_config(args.config, cache_override=args.cache)
    info, code = status.report(config.cache_path, now=time.time(), horizon=config.horizon_secs)
    print(json.dumps(info, indent=2) if args.json else status.render_text(info))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``token-refresh``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*SUBCOMMANDS, "-h", "--help", "--version"):
        args_list.insert(0, "run")
    parser = build_parser()
    args = parser.parse_args(args_list)
    verbose = getattr(args, "verbose", False)
    quiet = getattr(args, "quiet", False)
    _setup_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    handler = _cmd_status if args.command == "status" else _cmd_run
    try:
        return handler(args)
    except ReauthorizationRequired as e:
        log.error("refresh failed: %s", e)
        return e.exit_code
    except TokenRefreshError as e:
        log.error("%s failed: %s", args.command, e)
        return e.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as e:  # the one place that turns a bug into exit 70
        log.error("unexpected error: %s: %s", type(e).__name__, e, exc_info=verbose)
        if not verbose:
            log.error("run again with -v for the traceback")
        return ExitCode.SOFTWARE
