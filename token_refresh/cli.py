"""Command line: arguments, logging, and the one handler that turns an error into a log line and a status."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Sequence

from token_refresh import __version__, errors, logs, redact
from token_refresh.errors import ConfigError, ExitCode, TokenRefreshError

if TYPE_CHECKING:
    from token_refresh.config import Config
    from token_refresh.endpoint import Credentials
    from token_refresh.observe import RunRecord
    from token_refresh.refresh import Outcome
    from token_refresh.transport import Flight, Transport

log = logging.getLogger("token_refresh")

SUBCOMMANDS = ("run", "status", "authorize", "report", "help")
ENVIRONMENT_HELP = """\
environment:
  SAXOBANK_APP_KEY_LIVE, SAXOBANK_APP_SECRET_LIVE
                               client credentials (_SIM for environment: sim),
                               or *_FILE naming a file that holds one;
                               no secret = a public (PKCE) client
  TOKEN_REFRESH_CONFIG         config file when --config is not given
  AEGIS_SAXO_TOKEN_CACHE_PATH  cache path; beaten only by --cache
  TOKEN_REFRESH_LOG_FORMAT     text (default) or json

config: --config FILE, else $TOKEN_REFRESH_CONFIG, else built-in defaults.
cache:  --cache, else $AEGIS_SAXO_TOKEN_CACHE_PATH, else cache_path, else the default.
"""


def _positive_secs(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 1 and 86400 seconds, got {text}")
    return value


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration (e.g. 90m, 24h, 7d): {text!r}") from None
    if not 0 < value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 7d (the journal keeps 7d), got {text}")
    return value


def _cache_path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _add_common(parser: argparse.ArgumentParser, *, several_caches: bool = False, quiet_help: str) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config file (default: $TOKEN_REFRESH_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--cache",
        metavar="PATH",
        type=_cache_path,
        action="append" if several_caches else "store",
        help="token cache file (overrides $AEGIS_SAXO_TOKEN_CACHE_PATH and cache_path)"
        + ("; repeat to show several side by side" if several_caches else ""),
    )
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help=f"text (default) or json: one JSON object per line (also ${logs.FORMAT_ENV})",
    )
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="debug detail and tracebacks")
    noise.add_argument("-q", "--quiet", action="store_true", help=quiet_help)


def _help_width() -> int:
    """The width argparse would get from ``shutil.get_terminal_size()``, without importing shutil."""
    # argparse left to size itself imports shutil, and with it bz2, lzma and zlib: 2 ms of every
    # run (docs/DESIGN.md, "The valid path")
    return (_terminal_width() or 80) - 2


def _terminal_width() -> int | None:
    """$COLUMNS, else the width of the terminal on stdout; None when neither says."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0 and sys.__stdout__ is not None:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (ValueError, OSError):
            columns = 0
    return columns or None


def _fit(text: str, width: int) -> str:
    """Wrap a raw help text to ``width``: each entry hangs under its second column (``NAME  text``,
    ``label: text``); lines indented to that column continue the entry above."""
    import re
    import textwrap

    entries: list[list[Any]] = []  # [text, hang]
    for line in text.splitlines():
        leading = len(line) - len(line.lstrip())
        if entries and line.strip() and leading and leading == entries[-1][1] and entries[-1][0].strip():
            entries[-1][0] += " " + line.strip()
            continue
        head = re.match(r"\s*(?:\S+:\s+|\S.*?\s{2,})", line)
        entries.append([line, len(head.group(0)) if head and len(head.group(0)) <= width - 20 else leading])
    lines: list[str] = []
    for entry, hang in entries:
        fits = len(entry) <= width
        lines += [entry] if fits else textwrap.wrap(entry, width=width, subsequent_indent=" " * hang)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


EXIT_TABLE = "{exit table}"  # stands for errors.exit_table() in a raw help text


class _RawFormatter(argparse.RawDescriptionHelpFormatter):
    """Raw texts wrapped by ``_fit`` and the exit table rendered only when help is printed.

    Building them for every run cost more than the rest of the parser (docs/DESIGN.md, "The valid
    path").
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        prose, marker, rest = text.partition(EXIT_TABLE)
        text = _fit(prose, width) + (errors.exit_table(width) + rest if marker else "")
        return super()._fill_text(text, width, indent)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``run`` is the default subcommand.

    ``only``: give just that command its arguments (what a run parses); the others get their help
    line. Every run builds the parser, so this halves its cost (docs/DESIGN.md, "The valid path").
    """
    width = _help_width()
    raw = functools.partial(_RawFormatter, width=width)
    plain = functools.partial(argparse.HelpFormatter, width=width)
    table = EXIT_TABLE
    parser = argparse.ArgumentParser(
        prog="token-refresh",
        description=(
            "Keep a Saxo Bank OpenAPI OAuth2 token cache fresh: one cycle per invocation. "
            "Without a command, `run` is meant: `token-refresh` alone runs one cycle."
        ),
        epilog=ENVIRONMENT_HELP + "\n" + table,
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,status,authorize,report,help}")
    run = sub.add_parser(
        "run",
        help="refresh the token if it would not survive until the next run (the default)",
        description="Load the cache, classify the token and refresh it under a lock if it is due.",
        epilog=table,
        formatter_class=raw,
    )
    if only in (None, "run"):  # the other commands need only their help line
        _add_common(
            run,
            quiet_help="nothing on success (its warnings folded into one line), one line on a failure "
            "(for cron mail)",
        )
        run.add_argument("--force", action="store_true", help="refresh even if the token is valid")
        run.add_argument(
            "--dry-run", action="store_true", help="classify and say what would happen; no network, no write"
        )
        run.add_argument(
            "--check-credentials",
            action="store_true",
            help="with --dry-run: also prove that the token endpoint accepts the app key and secret, "
            "spending nothing (a made-up refresh token must be refused with invalid_grant)",
        )
        run.add_argument(
            "--metrics-file",
            metavar="PATH",
            help="write Prometheus textfile metrics here after the run (overrides metrics_path)",
        )
    status = sub.add_parser(
        "status",
        help="show the cache's state; no lock, no write, no credentials",
        description=(
            "Show the token's state. Exit 0 when the access token works, 75 when it has expired "
            "but a run can refresh it, 77 when a person must re-authorize, 65/66 for a bad cache, "
            "78 for a bad config, 2 for bad arguments. With several --cache, the worst of them: "
            f"{errors.severity_text()}."
        ),
        formatter_class=plain,
    )
    if only in (None, "status"):  # the other commands need only their help line
        _add_common(status, several_caches=True, quiet_help="only warnings and errors")
        status.add_argument("--json", action="store_true", help="a JSON list, one object per cache")
        status.add_argument(
            "--since",
            metavar="FILE",
            help="an earlier status --json output: report whether each issued_at advanced since",
        )
        status.add_argument(
            "--probe",
            action="store_true",
            help="also call the OpenAPI (openapi_url + /port/v1/users/me) with each access token: "
            "77 if it is refused (401/403), 75 if there is no usable answer",
        )
    auth = sub.add_parser(
        "authorize",
        help="log in through a browser and save a new token (first login, after invalid_grant)",
        description=(
            "Run the OAuth authorization-code flow: print (and open) the login URL, take the "
            "redirect back, exchange the code and save the new token, replacing the cache's "
            "token fields. Needs redirect_uri in the config. Without an app secret the app is a "
            "public client and PKCE is used."
        ),
        epilog=table,
        formatter_class=raw,
    )
    if only in (None, "authorize"):  # the other commands need only their help line
        _add_common(auth, quiet_help="only warnings and errors")
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
            "--pkce",
            action="store_true",
            help="send an S256 code challenge; always done for a public client (no app secret), and with "
            "a secret both Basic authentication and the code verifier are sent",
        )
        auth.add_argument("--no-browser", action="store_true", help="only print the URL")
        auth.add_argument(
            "--timeout",
            type=_positive_secs,
            default=300.0,
            metavar="SECS",
            help="how long to wait for the redirect or the paste (default: 300)",
        )
    report = sub.add_parser(
        "report",
        help="answer the observation criteria from the run journal beside each cache",
        description=(
            "Read the run journal (<cache>.runs.json) and report, over the last --since: runs, "
            "refreshes, failures by exit status, invalid_grant, the longest gap between successful "
            "runs, whether issued_at only moved forward and whether a run found the access token "
            "expired. Exit 0 when every criterion holds, 69 when one does not, 66/65 when a journal "
            "is missing or damaged."
        ),
        formatter_class=plain,
    )
    if only in (None, "report"):  # the other commands need only their help line
        _add_common(report, several_caches=True, quiet_help="only warnings and errors")
        report.add_argument("--json", action="store_true", help="a JSON list, one object per cache")
        report.add_argument(
            "--since",
            metavar="DURATION",
            type=_duration,
            default=86400.0,
            help="how far back to look: e.g. 90m, 24h, 7d (default: 24h; the journal keeps 7 days)",
        )
    helper = sub.add_parser("help", help="show the help of a command", formatter_class=plain)
    if only in (None, "help"):  # the other commands need only their help line
        helper.add_argument("topic", nargs="?", choices=SUBCOMMANDS[:4], metavar="COMMAND")
    return parser


def _transport_factory(retry_budget_secs: float) -> Any:
    def make(flight: Flight | None = None) -> Transport:
        from token_refresh import transport

        return transport.new_transport(retry_budget_secs=retry_budget_secs, flight=flight)

    return make


def _summary(outcome: Outcome, *, client: str = "", dry_run: bool = False) -> str:
    from token_refresh import fmt
    from token_refresh.freshness import State
    from token_refresh.refresh import Action

    a = outcome.assessment
    left = f"access token {fmt.left(a.access_left)}"
    left += f", refresh token {fmt.left(a.refresh_left)}" if a.has_refresh_token else ", no refresh token"
    where = f"(cache {outcome.path})"
    if outcome.action in (Action.REFRESHED, Action.ADOPTED):
        token = outcome.token
        names = (
            f"access {redact.fingerprint(token.access_token)}, "
            f"refresh {redact.fingerprint(token.refresh_token)}"
        )
        if outcome.action is Action.ADOPTED:
            return f"token adopted from a stopped run: {left} [{names}] {where}"
        tries = (
            f" after {outcome.attempts} attempts over {outcome.elapsed:.1f} s" if outcome.attempts > 1 else ""
        )
        by = f" by a {client} client" if client else ""
        return f"token refreshed{tries}: {left} [{names}]{by} {where}"
    if outcome.action is Action.REFRESHED_BY_OTHER:
        return f"token valid: refreshed by another run while this one waited; {left} {where}"
    if outcome.action is Action.WOULD_REFRESH:
        verdict = "needs refresh" if a.state is State.NEEDS_REFRESH else "valid"
        return f"dry run: token {verdict} ({a.reason}); would refresh; {left} {where}"
    if dry_run:
        return f"dry run: token valid, nothing to do: {left} {where}"
    return f"token valid: {left} {where}"


def _check_credentials(config: Config, credentials: Credentials) -> None:
    """--dry-run --check-credentials: one request that proves the client, spends nothing."""
    from token_refresh import endpoint

    proof = endpoint.check_client(
        _transport_factory(config.retry_budget_secs)(None),
        token_url=config.token_url,
        credentials=credentials,
        timeout=config.http_timeout_secs,
    )
    log.info(
        "dry run: credentials accepted (%s): the token endpoint authenticated the %s; nothing was spent",
        proof,
        "app key (a public client)" if credentials.public else "app key and secret",
    )


def _missing_cache_hint(source: str) -> str:
    """What to do about a cache that does not exist, given where its path came from."""
    if source.startswith("the built-in default"):
        return (
            f"this path is {source} (no --cache, $AEGIS_SAXO_TOKEN_CACHE_PATH or cache_path named one): "
            "name the cache with one of them, or create a first cache with `token-refresh authorize`"
        )
    return (
        f"the path comes from {source}: check it and the directory mount, "
        "or create a first cache with `token-refresh authorize`"
    )


def _cmd_run(args: argparse.Namespace, record: RunRecord) -> int:
    from token_refresh.config import load_config, load_credentials
    from token_refresh.refresh import run_cycle

    config = load_config(args.config, cache_override=args.cache)
    record.config = config
    record.metrics_path = args.metrics_file or config.metrics_path
    record.force = args.force
    credentials = load_credentials(config.environment)
    log.debug(
        "config from %s; cache %s (from %s); token_url %s; %s",
        config.source,
        config.cache_path,
        config.cache_source,
        config.token_url,
        credentials.kind,
    )
    if args.check_credentials:
        _check_credentials(config, credentials)
    record.cycle_started = True
    try:
        outcome = run_cycle(
            config=config,
            credentials=credentials,
            clock=time.time,
            transport_factory=_transport_factory(config.retry_budget_secs),
            force=args.force,
            dry_run=args.dry_run,
            refused=record.before_request,
        )
    except errors.CacheMissing as e:
        if e.absent:
            e.hint = _missing_cache_hint(config.cache_source)
        raise
    a = outcome.assessment
    if not a.has_refresh_token:
        from token_refresh import fmt

        log.warning(
            "the token has no refresh token (a 24-hour developer token?); it stops working in %s",
            fmt.left(a.access_left),
        )
    for note in outcome.notes:
        log.warning("%s", note)
    summary = _summary(outcome, client=credentials.client_type, dry_run=args.dry_run)
    record.succeeded(outcome, summary)
    log.info("%s", summary, extra=logs.fields(final=True, **record.log_fields()))
    if outcome.stopped_by is not None:
        import signal

        record.skip_hooks = True
        log.warning(
            "%s arrived during the refresh and waited until the new token was saved; hooks skipped",
            signal.Signals(outcome.stopped_by).name,
        )
    return ExitCode.OK


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from token_refresh import status
    from token_refresh.config import client_type, load_config

    config = load_config(args.config)
    snapshot = status.load_snapshot(args.since) if args.since else None
    probe = None
    if args.probe:  # the network only when asked for
        probe = status.prober(
            openapi_url=config.openapi_url, timeout=config.http_timeout_secs, budget=config.retry_budget_secs
        )
    infos, code = status.collect(
        args.cache or [config.cache_path],
        now=time.time(),
        horizon=config.horizon_secs,
        snapshot=snapshot,
        probe=probe,
        missing_hint=_missing_cache_hint("--cache" if args.cache else config.cache_source),
    )
    client, why = client_type(config.environment)  # whether a secret is configured, not its value
    for info in infos:
        info["client"] = client
    if args.json:
        print(json.dumps(infos, indent=2))
    else:
        print(status.render_text(infos, client=f"{client} ({why})", width=_terminal_width()))
    return code


def _cmd_report(args: argparse.Namespace) -> int:
    import json

    from token_refresh import report
    from token_refresh.config import load_config

    config = load_config(args.config)
    paths = args.cache or [config.cache_path]
    rows, code = report.collect(paths, config=config, since=args.since, now=time.time())
    print(json.dumps(rows, indent=2) if args.json else report.render_text(rows))
    return code


def _cmd_authorize(args: argparse.Namespace, record: RunRecord) -> int:
    from token_refresh import authorize, oauth
    from token_refresh.config import load_config, load_credentials

    config = load_config(args.config, cache_override=args.cache)
    record.config = config
    mode = oauth.choose_mode(config, args.mode)
    credentials = load_credentials(config.environment)
    pkce = args.pkce or credentials.public
    if credentials.public and not args.pkce:
        log.info("no app secret configured: a public client, so PKCE is used")
    log.debug(
        "config from %s; cache %s; %s mode; %s", config.source, config.cache_path, mode, credentials.kind
    )
    make = _transport_factory(config.retry_budget_secs)
    record.cycle_started = True
    result = authorize.authorize(
        config=config,
        credentials=credentials,
        mode=mode,
        pkce=pkce,
        open_browser=not args.no_browser,
        timeout=args.timeout,
        clock=time.time,
        transport_factory=lambda: make(None),
        stdin=sys.stdin,
        out=sys.stderr,
    )
    for note in result.notes:
        log.warning("%s", note)
    message = authorize.summary(
        result, client=f"{credentials.client_type} client" + (" with PKCE" if pkce else "")
    )
    record.authorized(result, message)
    log.info("%s", message)
    return ExitCode.OK


def _log_format(args: argparse.Namespace) -> str:
    value = args.log_format or os.environ.get(logs.FORMAT_ENV) or "text"
    if value not in logs.FORMATS:
        raise ConfigError(
            "environment", [f"${logs.FORMAT_ENV} must be one of {', '.join(logs.FORMATS)}, got {value!r}"]
        )
    return value


def _normalise(argv: list[str]) -> list[str]:
    """``run`` is the default command; a mistyped command is an error naming the valid ones."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        return ["run", *argv]
    if argv[0] in SUBCOMMANDS or argv[0] in ("-h", "--help", "--version"):
        return argv
    import difflib

    close = difflib.get_close_matches(argv[0], SUBCOMMANDS[:4], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    build_parser(only="help").error(
        f"unknown command {argv[0]!r}{hint}; the commands are: run (the default), status, authorize, "
        "report, help"
    )
    return argv  # not reached: error() exits 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``token-refresh``; returns the exit status."""
    argv_list = _normalise(list(sys.argv[1:] if argv is None else argv))
    command = argv_list[0] if argv_list and argv_list[0] in SUBCOMMANDS and argv_list[0] != "help" else None
    parser = build_parser(only=command)
    args = parser.parse_args(argv_list)
    if getattr(args, "check_credentials", False) and not args.dry_run:
        _subparser(parser, "run").error("--check-credentials goes with --dry-run (a refresh proves them)")
    if args.command == "help":
        target = parser if args.topic is None else _subparser(parser, args.topic)
        target.print_help()
        return ExitCode.OK
    verbose = getattr(args, "verbose", False)
    quiet = getattr(args, "quiet", False)
    try:
        log_format = _log_format(args)
    except ConfigError as e:
        logs.setup(logging.INFO, "text")
        log.error("%s failed: %s", args.command, e)
        return e.exit_code
    quiet_handler = logs.setup(logging.DEBUG if verbose else logging.INFO, log_format, quiet=quiet)
    record = None
    if args.command in ("run", "authorize"):
        from token_refresh.observe import RunRecord

        record = RunRecord(
            started_at=time.time(),
            metrics_path=getattr(args, "metrics_file", None),
            dry_run=getattr(args, "dry_run", False),
            command=args.command,
        )
    code = _handle(args, record, verbose)
    if record is not None:
        record.finish(code)  # journal, metrics file and hooks; they never change the exit status
    if quiet_handler is not None:
        quiet_handler.flush_one(code)
    return code


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    return parser


def _failure_fields(
    args: argparse.Namespace, record: RunRecord | None, code: int, message: str, error: BaseException
) -> Any:
    if record is None:
        return logs.fields(final=True, command=args.command, exit_status=code)
    record.failed(code, message, error)
    return logs.fields(final=True, **record.log_fields())


def _handle(args: argparse.Namespace, record: RunRecord | None, verbose: bool) -> int:
    """Run the command; the one place where an error becomes a log line and an exit status."""
    try:
        if record is not None:
            return _cmd_run(args, record) if args.command == "run" else _cmd_authorize(args, record)
        return _cmd_report(args) if args.command == "report" else _cmd_status(args)
    except (TokenRefreshError, KeyboardInterrupt) as e:
        code = errors.exit_status(e)
        message = str(e) if isinstance(e, TokenRefreshError) else "interrupted"
        verb = f"{args.command} failed"
        if args.command == "run":
            verb = "refresh failed" if _sent(e) else "not refreshed"
            if args.dry_run:  # the only request a dry run sends is the credential check
                verb = "dry run: " + ("credential check failed" if _sent(e) else "not refreshed")
        if isinstance(e, TokenRefreshError) and e.attempts > 1 and not e.counts_attempts:
            message += f" (after {e.attempts} attempts over {e.elapsed:.1f} s)"
        log.error("%s: %s", verb, message, extra=_failure_fields(args, record, code, message, e))
        if isinstance(e, TokenRefreshError) and e.stopped_by is not None and record is not None:
            import signal

            record.skip_hooks = True
            log.warning("%s arrived during the request; hooks skipped", signal.Signals(e.stopped_by).name)
        return code
    except Exception as e:  # a bug: exit 70, traceback only with -v
        code = errors.exit_status(e)
        message = f"unexpected error: {type(e).__name__}: {e}"
        log.error("%s", message, exc_info=verbose, extra=_failure_fields(args, record, code, message, e))
        if not verbose:
            log.error("run again with -v for the traceback")
        return code


def _sent(error: BaseException) -> bool:
    """Whether the failure came from the token endpoint, i.e. a refresh was attempted."""
    return (
        isinstance(error, errors.EndpointError)
        or getattr(error, "oauth_error", None) is not None
        or (isinstance(error, errors.CacheWriteError) and error.kept_at is not None)
    )
