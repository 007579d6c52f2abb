"""What one ``run`` tells the outside: structured log fields, the run journal, the metrics file and the hooks.

Imported on every run, so it imports nothing heavy: the journal is loaded only by a run that went
beyond finding the token valid, metrics and hooks only when configured.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from token_refresh import redact
from token_refresh.fmt import iso, secs

if TYPE_CHECKING:
    from token_refresh.authorize import Result
    from token_refresh.config import Config
    from token_refresh.freshness import Assessment
    from token_refresh.refresh import Outcome
    from token_refresh.token import Token

log = logging.getLogger("token_refresh")


class RunRecord:
    """What the CLI learns during one run (or ``authorize``); ``finish`` turns it into the journal,
    metrics and hooks."""

    def __init__(
        self, *, started_at: float, metrics_path: str | None, dry_run: bool = False, command: str = "run"
    ) -> None:
        self.command = command
        self.force = False
        self.cycle_started = False  # config and credentials were fine: the run went for the cache
        self.error: BaseException | None = None
        self.sending: Token | None = None  # the token whose refresh token was about to be sent
        self.sending_at = 0.0
        self.started_at = started_at
        self.started_monotonic = time.monotonic()
        self.metrics_path = metrics_path
        self.dry_run = dry_run
        self.config: Config | None = None
        self.outcome: Outcome | None = None
        self.token: Token | None = None
        self.assessment: Assessment | None = None
        self.exit_code: int | None = None
        self.message = ""
        self.duration_secs: float | None = None
        self.skip_hooks = False  # a stop signal was held until the save: end without hooks

    @property
    def cache_path(self) -> str | None:
        """The cache this run worked on, resolved as the cycle does."""
        if self.outcome is not None:
            return self.outcome.path
        if self.config is None:
            return None
        from token_refresh import store

        return store.resolve(self.config.cache_path)

    def succeeded(self, outcome: Outcome, message: str) -> None:
        """The cycle returned normally."""
        self.duration_secs = time.monotonic() - self.started_monotonic
        self.outcome, self.token, self.assessment = outcome, outcome.token, outcome.assessment
        self.exit_code, self.message = 0, message

    def authorized(self, result: Result, message: str) -> None:
        """``authorize`` saved a new token."""
        self.duration_secs = time.monotonic() - self.started_monotonic
        self.token, self.assessment = result.token, result.assessment
        self.exit_code, self.message = 0, message

    def before_request(self, token: Token) -> str | None:
        """``run_cycle``'s ``refused``: remember the token about to be sent; when was it refused?

        ``--force`` sends a refused token anyway, with a warning.
        """
        from token_refresh import journal

        self.sending, self.sending_at = token, time.time()
        assert self.cache_path is not None
        when = journal.refusal_of(self.cache_path, token.refresh_token)
        if when is not None and self.force:
            log.warning(
                "--force: sending refresh token %s again although the token endpoint refused it at %s",
                redact.fingerprint(token.refresh_token),
                when,
            )
            return None
        return when

    def failed(self, exit_code: int, message: str, error: BaseException | None = None) -> None:
        """The cycle raised; read the cache again (read-only) so metrics and hooks know the expiry."""
        self.duration_secs = time.monotonic() - self.started_monotonic
        self.exit_code, self.message = exit_code, message
        self.error = error if error is not None else self.error
        path = self.cache_path
        if self.config is None or path is None:
            return
        from token_refresh import store
        from token_refresh.errors import TokenRefreshError
        from token_refresh.freshness import classify

        try:
            self.token = store.load(path)
        except TokenRefreshError:
            return
        self.assessment = classify(self.token, now=time.time(), horizon=self.config.horizon_secs)

    @property
    def refreshed(self) -> bool:
        """Whether this run put a new token in the cache (by a refresh or by rolling one forward)."""
        from token_refresh.refresh import Action

        return self.outcome is not None and self.outcome.action in (Action.REFRESHED, Action.ADOPTED)

    @property
    def state(self) -> str:
        """The token's state after the run, or ``unknown`` when the cache could not be read."""
        return "unknown" if self.assessment is None else self.assessment.state.value

    def log_fields(self) -> dict[str, Any]:
        """Structured fields for a JSON log line; fingerprints only, never a token."""
        fields: dict[str, Any] = {"command": self.command, "exit_status": self.exit_code, "state": self.state}
        if self.dry_run:
            fields["dry_run"] = True  # nothing was sent or written, whatever the other fields say
        if self.outcome is not None:
            fields["action"] = self.outcome.action.value
        if self.cache_path is not None:
            fields["cache"] = self.cache_path
        a = self.assessment
        if a is not None:
            fields["access_expires_in_secs"] = secs(a.access_left)
            fields["refresh_expires_in_secs"] = secs(a.refresh_left)
            fields["access_expires_at"] = iso(a.access_expires_at)
            fields["refresh_expires_at"] = iso(a.refresh_expires_at)
        if self.token is not None:
            # callables: computed only if a JSON line is written (hashlib stays off the text path)
            fields["access_fingerprint"] = functools.partial(redact.fingerprint, self.token.access_token)
            fields["refresh_fingerprint"] = functools.partial(redact.fingerprint, self.token.refresh_token)
        if self.duration_secs is not None:
            fields["duration_secs"] = round(self.duration_secs, 3)
        return fields

    def hook_values(self) -> dict[str, str]:
        """The ``TOKEN_REFRESH_*`` variables a hook receives."""
        a = self.assessment
        access_at = None if a is None else a.access_expires_at
        refresh_at = None if a is None else a.refresh_expires_at
        return {
            "TOKEN_REFRESH_EXIT_CODE": str(self.exit_code),
            "TOKEN_REFRESH_STATE": self.state,
            "TOKEN_REFRESH_CACHE_PATH": self.cache_path or "",
            "TOKEN_REFRESH_MESSAGE": " ".join(self.message.split()),
            "TOKEN_REFRESH_ACCESS_EXPIRES_AT": iso(access_at) or "",
            "TOKEN_REFRESH_ACCESS_EXPIRES_AT_EPOCH": "" if access_at is None else str(int(access_at)),
            "TOKEN_REFRESH_REFRESH_EXPIRES_AT": iso(refresh_at) or "",
            "TOKEN_REFRESH_REFRESH_EXPIRES_AT_EPOCH": "" if refresh_at is None else str(int(refresh_at)),
        }

    def finish(self, exit_code: int) -> None:
        """Write the journal and the metrics file, then run the hooks; none can change ``exit_code``."""
        if self.dry_run:
            return  # a dry run changes nothing, so it reports nothing either
        if self.exit_code is None:
            self.failed(exit_code, self.message)
        try:
            self._write_journal(exit_code)
        except Exception as e:  # the journal is a record, never a reason to fail a run
            what = e.strerror or e if isinstance(e, OSError) else e
            log.warning("cannot write the run journal of %s: %s", self.cache_path, what)
        if self.command != "run":
            return
        try:
            self._write_metrics(exit_code)
        except Exception as e:  # monitoring must not turn a good run into a failed one
            log.error("cannot write the metrics file %s: %s: %s", self.metrics_path, type(e).__name__, e)
        try:
            self._run_hooks(exit_code)
        except Exception as e:
            log.error("hooks failed: %s: %s", type(e).__name__, e)

    def journal_record(self, exit_code: int) -> dict[str, Any] | None:
        """This run's journal record; None for a run not journaled (docs/DESIGN.md, "Journal")."""
        from token_refresh.errors import ReauthorizationRequired
        from token_refresh.refresh import Action

        if not self.cycle_started or self.token is None:
            return None  # the config, credentials or cache could not be read: no chain to speak of
        if self.command != "run" and exit_code != 0:
            return None  # a failed authorize changed nothing, and said so on the operator's screen
        from token_refresh import journal

        action = self.outcome.action.value if self.outcome is not None else journal.AUTHORIZED
        if self.outcome is not None and self.outcome.action in (Action.VALID, Action.WOULD_REFRESH):
            return None  # no lock was taken: see docs/DESIGN.md, "Journal"
        spent = refused = None
        if exit_code != 0:
            action = journal.FAILED
            e = self.error
            if isinstance(e, ReauthorizationRequired) and e.oauth_error == "invalid_grant" and self.sending:
                action, refused = journal.REFUSED, self.sending.refresh_token
        elif action == Action.REFRESHED.value and self.sending is not None:
            spent = self.sending.refresh_token
        expired_at_start = None
        if self.sending is not None:
            expired_at_start = self.sending.issued_at + self.sending.expires_in <= self.sending_at
        elif exit_code != 0 and self.assessment is not None:
            expired_at_start = self.assessment.access_left <= 0  # a failed run leaves the cache as it was
        return journal.new_record(
            command=self.command,
            action=action,
            exit_status=exit_code,
            started_at=self.started_at,
            duration_secs=self.duration_secs,
            token=self.token,
            assessment=self.assessment,
            spent=spent,
            refused=refused,
            access_expired_at_start=expired_at_start,
            attempts=self.outcome.attempts if self.outcome else getattr(self.error, "attempts", 0),
        )

    def _write_journal(self, exit_code: int) -> None:
        record = self.journal_record(exit_code)
        path = self.cache_path
        if record is None or path is None or self.config is None:
            return
        from token_refresh import journal, store
        from token_refresh.errors import Interrupted, LockTimeout, TokenRefreshError

        stopping = isinstance(self.error, Interrupted) or (
            self.outcome is not None and self.outcome.stopped_by is not None
        )
        # the lock is stuck, or a stop signal wants the run to end now (docs/DESIGN.md, "Stop
        # signals"): then do not wait for the lock again
        if not (isinstance(self.error, LockTimeout) or stopping):
            try:
                with store.lock(path, self.config.lock_timeout_secs):
                    journal.append(path, record, now=time.time(), locked=True)
                    return
            except TokenRefreshError as e:  # the lock cannot be had; the record is still worth writing
                log.debug("writing the run journal without the lock: %s", e)
        journal.append(path, record, now=time.time(), locked=False)

    def _write_metrics(self, exit_code: int) -> None:
        if not self.metrics_path:
            return
        from token_refresh import metrics

        metrics.require(
            "--metrics-file"
            if self.metrics_path != getattr(self.config, "metrics_path", None)
            else "metrics_path"
        )
        a = self.assessment
        metrics.write(
            self.metrics_path,
            metrics.RunMetrics(
                cache_path=self.cache_path or metrics.UNKNOWN_CACHE,
                started_at=self.started_at,
                duration_secs=self.duration_secs or 0.0,
                exit_code=exit_code,
                refreshed=self.refreshed,
                access_expires_at=None if a is None else a.access_expires_at,
                refresh_expires_at=None if a is None else a.refresh_expires_at,
            ),
        )

    def _run_hooks(self, exit_code: int) -> None:
        config = self.config
        if config is None or self.skip_hooks:
            return
        if exit_code != 0:
            event, commands = "on_failure", config.hooks_on_failure
        elif self.refreshed:
            event, commands = "on_refresh", config.hooks_on_refresh
        else:
            return
        if commands:
            from token_refresh import hooks

            hooks.run_hooks(event, commands, values=self.hook_values(), timeout=config.hook_timeout_secs)
