"""Command line: arguments, logging, and the one place where errors become exit statuses."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Sequence

from token_refresh import __version__, logs, redact
from token_refresh.errors import ExitCode, ReauthorizationRequired, TokenRefreshError

if TYPE_CHECKING:
    import requests

    from token_refresh.cycle import Outcome
    from token_refresh.observe import RunRecord

log = logging.getLogger("token_refresh")

SUBCOMMANDS = ("run", "status", "authorize")
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

AUTHORIZE_EXIT_TABLE = """\
exit status (the cache is untouched unless the status is 0):
  0   new token saved
  2   command-line usage error
  65  the redirect does not answer this request: state mismatch, no code, nothing pasted
  66  the existing cache cannot be read
  74  the new cache could not be written (checked before the browser opens and
      again before the code is exchanged)
  75  no redirect within --timeout; listener port busy; network, 429/5xx; lock busy
  77  refused: error= in the redirect (e.g. access_denied), or Saxo rejected the
      code (invalid_grant: expired, already used, PKCE or redirect_uri mismatch)
  78  configuration error: redirect_uri missing or not usable with --listen,
      credentials, 401/403/invalid_client, a wrong token URL
"""


def _positive_secs(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, got {text}")
    return value


def _add_common(parser: argparse.ArgumentParser, *, several_caches: bool = False) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config file (default: $TOKEN_REFRESH_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--cache",
        metavar="PATH",
        action="append" if several_caches else "store",
        help="token cache file (overrides $AEGIS_SAXO_TOKEN_CACHE_PATH and cache_path)"
        + ("; repeat to show several side by side" if several_caches else ""),
    )
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help=f"text (default) or json: one JSON object per line (also ${logs.FORMAT_ENV})",
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
    sub = parser.add_subparsers(dest="command", metavar="{run,status,authorize}")
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
    noise.add_argument(
        "-q", "--quiet", action="store_true", help="nothing for a valid run, else one line (for cron mail)"
    )
    run.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write Prometheus textfile metrics here after the run (overrides metrics_path)",
    )
    status = sub.add_parser(
        "status",
        help="show the cache's state; no lock, no network, no write, no credentials",
        description=(
            "Show the token's state. Exit 0 when the access token works, 75 when it has expired "
            "but a run can refresh it, 77 when a person must re-authorize, 65/66 for a bad cache. "
            "With several --cache, the worst of them: 77 > 66 > 65 > 75 > 0."
        ),
        formatter_class=plain,
    )
    _add_common(status, several_caches=True)
    status.add_argument("--json", action="store_true", help="a JSON list, one object per cache")
    status.add_argument(
        "--since",
        metavar="FILE",
        help="an earlier status --json output: report whether each issued_at advanced since",
    )
    auth = sub.add_parser(
        "authorize",
        help="log in through a browser and save a new token (first login, after invalid_grant)",
        description=(
            "Run the OAuth authorization-code flow: print (and open) Saxo's login URL, take the "
            "redirect back, exchange the code and save the new token, replacing the cache's "
            "token fields. Needs redirect_uri in the config."
        ),
        epilog=AUTHORIZE_EXIT_TABLE,
        formatter_class=raw,
    )
    _add_common(auth)
    how = auth.add_mutually_exclusive_group()
    how.add_argument(
        "--listen",
        dest="mode",
        action="store_const",
        const="listen",
        help="serve the http://localhost:PORT/ redirect_uri on 127.0.0.1 and catch the redirect "
        "(default when redirect_uri is such an address and a display is available)",
    )
    how.add_argument(
        "--paste",
        dest="mode",
        action="store_const",
        const="paste",
        help="read the redirected URL (or the bare code) from standard input (default otherwise)",
    )
    auth.add_argument(
        "--pkce", action="store_true", help="send an S256 code challenge; the exchange sends no secret"
    )
    auth.add_argument("--no-browser", action="store_true", help="only print the URL")
    auth.add_argument(
        "--timeout",
        type=_positive_secs,
        default=300.0,
        metavar="SECS",
        help="how long to wait for the redirect or the paste (default: 300)",
    )
    noise = auth.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="debug detail and tracebacks")
    noise.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return parser


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


def _cmd_run(args: argparse.Namespace, record: RunRecord) -> int:
    from token_refresh.config import load_config, load_credentials
    from token_refresh.cycle import run_cycle

    config = load_config(args.config, cache_override=args.cache)
    record.config = config
    metrics_path = args.metrics_file or config.metrics_path
    if metrics_path:
        from token_refresh import metrics

        record.metrics_path = None  # nothing to write with if the extra is missing
        metrics.require("--metrics-file" if args.metrics_file else config.source)
    record.metrics_path = metrics_path
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
    if not a.has_refresh_token:
        log.warning(
            "the token has no refresh token (a 24-hour developer token?); it stops working in %s",
            _left(a.access_left),
        )
    summary = _summary(outcome)
    record.succeeded(outcome, summary)
    log.info("%s", summary, extra=logs.fields(final=True, **record.log_fields()))
    return ExitCode.OK


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from token_refresh import multistatus
    from token_refresh.config import load_config

    config = load_config(args.config)
    snapshot = multistatus.load_snapshot(args.since) if args.since else None
    infos, code = multistatus.collect(
        args.cache or [config.cache_path], now=time.time(), horizon=config.horizon_secs, snapshot=snapshot
    )
    print(json.dumps(infos, indent=2) if args.json else multistatus.render_text(infos))
    return code


def _cmd_authorize(args: argparse.Namespace) -> int:
    from token_refresh import authorize
    from token_refresh.config import load_app_key, load_config, load_credentials

    config = load_config(args.config, cache_override=args.cache)
    mode = authorize.choose_mode(config, args.mode)
    if args.pkce:
        client_id, credentials = load_app_key(config.environment), None
    else:
        credentials = load_credentials(config.environment)
        redact.register(credentials.app_secret)
        client_id = credentials.app_key
    log.debug("config from %s; cache %s; %s mode", config.source, config.cache_path, mode)
    result = authorize.authorize(
        config=config,
        client_id=client_id,
        credentials=credentials,
        mode=mode,
        pkce=args.pkce,
        open_browser=not args.no_browser,
        timeout=args.timeout,
        clock=time.time,
        session_factory=lambda: _session_factory(config.retry_budget_secs),
        stdin=sys.stdin,
        out=sys.stderr,
    )
    log.info("%s", authorize.summary(result))
    return ExitCode.OK


def _log_format(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    value = args.log_format or os.environ.get(logs.FORMAT_ENV) or "text"
    if value not in logs.FORMATS:
        parser.error(f"${logs.FORMAT_ENV} must be one of {', '.join(logs.FORMATS)}, got {value!r}")
    return value


def _failure_fields(args: argparse.Namespace, record: RunRecord | None, code: int, message: str) -> Any:
    if record is None:
        return logs.fields(final=True, command=args.command, exit_status=code)
    record.failed(code, message)
    return logs.fields(final=True, **record.log_fields())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``token-refresh``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*SUBCOMMANDS, "-h", "--help", "--version"):
        args_list.insert(0, "run")
    parser = build_parser()
    args = parser.parse_args(args_list)
    verbose = getattr(args, "verbose", False)
    quiet = getattr(args, "quiet", False)
    quiet_handler = logs.setup(
        logging.DEBUG if verbose else logging.INFO, _log_format(parser, args), quiet=quiet
    )
    record = None
    if args.command == "run":
        from token_refresh.observe import RunRecord

        record = RunRecord(started_at=time.time(), metrics_path=args.metrics_file, dry_run=args.dry_run)
    code = _dispatch(args, record, verbose)
    if record is not None:
        record.finish(code)  # metrics file and hooks; they never change the exit status
    if quiet_handler is not None:
        quiet_handler.flush_one(code)
    return code


def _dispatch(args: argparse.Namespace, record: RunRecord | None, verbose: bool) -> int:
    try:
        if record is not None:
            return _cmd_run(args, record)
        return _cmd_authorize(args) if args.command == "authorize" else _cmd_status(args)
    except ReauthorizationRequired as e:
        log.error("refresh failed: %s", e, extra=_failure_fields(args, record, e.exit_code, str(e)))
        return e.exit_code
    except TokenRefreshError as e:
        log.error("%s failed: %s", args.command, e, extra=_failure_fields(args, record, e.exit_code, str(e)))
        return e.exit_code
    except KeyboardInterrupt:
        log.error("interrupted", extra=_failure_fields(args, record, 130, "interrupted"))
        return 130
    except Exception as e:  # the one place that turns a bug into exit 70
        message = f"unexpected error: {type(e).__name__}: {e}"
        log.error(
            "%s", message, exc_info=verbose, extra=_failure_fields(args, record, ExitCode.SOFTWARE, message)
        )
        if not verbose:
            log.error("run again with -v for the traceback")
        return ExitCode.SOFTWARE
