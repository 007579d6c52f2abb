"""The docs say what the program does: exit statuses, cross-references in the runbook, the venv path.

The README's exit table is the one ``--help`` prints (``errors.exit_rows()``); the runbook's
troubleshooting table has a row for every status the program can return, and each row speaks of
its own status, not of another's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from token_refresh import errors
from token_refresh.errors import ExitCode

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
RUNBOOK = (REPO / "docs" / "RUNBOOK.md").read_text()
VENV_SCRIPT = (REPO / "cron" / "synology-task-venv.sh").read_text()
PRODUCTION_VENV = "/volume1/aegis/token-refresh-venv"


def section(text: str, heading: str) -> str:
    """The body of the markdown section whose heading is ``heading``, up to the next heading."""
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the first markdown table in ``text`` (header and rule dropped)."""
    lines = text[text.index("\n|") + 1 :].splitlines()
    table = lines[: next((i for i, ln in enumerate(lines) if not ln.startswith("|")), len(lines))]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table[2:]]


def codes_of(rows: list[list[str]]) -> dict[int, str]:
    """Status -> the rest of the row, for rows whose first cell is one status."""
    return {int(row[0]): " | ".join(row[1:]) for row in rows if row[0].isdigit()}


def expected_readme_table() -> str:
    return "| code | meaning |\n|---|---|\n" + "".join(f"| {c} | {m} |\n" for c, m in errors.exit_rows())


# -- README ------------------------------------------------------------------------------------------


def test_readme_exit_table_is_the_help_table() -> None:
    body = section(README, "Exit status (sysexits)")
    start = body.index("| code | meaning |")
    table = body[start : body.index("\n\n", start) + 1]
    assert table == expected_readme_table(), "regenerate the README table from errors.exit_rows():\n" + (
        expected_readme_table()
    )


def test_every_exit_status_is_in_the_readme_table() -> None:
    rows = codes_of(table_rows(section(README, "Exit status (sysexits)")))
    assert set(rows) == {int(code) for code in ExitCode}


def test_authorize_exit_table_uses_real_statuses() -> None:
    body = README[README.index("Exit status of `authorize`") :]
    rows = codes_of(table_rows(body))
    assert len(rows) >= 6
    assert set(rows) <= {int(code) for code in ExitCode}


# -- RUNBOOK "By exit status" -----------------------------------------------------------------------

# Too common in the meanings to tell one status from another.
_STOP = frozenset(
    re.findall(
        r"\w+",
        "that this with from after before than when their there which what were been have will into "
        "over only within anything every other again cannot could",
    )
)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z][a-z-]{3,}", text.lower())) - _STOP


def distinctive_words() -> dict[int, set[str]]:
    """For each status, the words of its meaning and causes that no other status's text uses."""
    words = {code: _words(meaning) for code, meaning in errors.exit_rows()}
    return {
        code: own - set().union(*(other for c, other in words.items() if c != code))
        for code, own in words.items()
    }


def test_runbook_troubleshooting_table_has_every_exit_status() -> None:
    rows = codes_of(table_rows(section(RUNBOOK, "By exit status")))  # Docker's own share one row
    assert {int(code) for code in ExitCode} - set(rows) == set()


@pytest.mark.parametrize("code", [int(c) for c in ExitCode])
def test_runbook_row_speaks_of_its_own_status(code: int) -> None:
    """The row's meaning uses the status's own words (from errors.py) more than any other's.

    A row that describes another status (two rows swapped, a stale meaning) fails; rewording
    either side keeps passing as long as one word that belongs to this status alone stays.
    """
    meaning = table_rows(section(RUNBOOK, "By exit status"))
    row = next(cells[1] for cells in meaning if cells[0] == str(code))
    found = _words(row)
    score = {c: len(found & words) for c, words in distinctive_words().items()}
    assert score[code] >= 1, f"{code}: {row!r} shares no word with {sorted(distinctive_words()[code])}"
    rivals = {c: s for c, s in score.items() if c != code and s >= score[code]}
    assert rivals == {}, f"{code}: {row!r} reads as much like {rivals} as like itself"


def test_runbook_states_the_signal_statuses() -> None:
    rows = codes_of(table_rows(section(RUNBOOK, "By exit status")))
    assert "SIGHUP" in rows[129]
    assert "Ctrl-C" in rows[130]
    assert "SIGTERM" in rows[143]


# -- cross-references and paths ----------------------------------------------------------------------


def _headings(text: str) -> list[str]:
    """Headings without their level, numbering and backticks."""
    return [re.sub(r"^\d+\.\s+|`", "", h) for h in re.findall(r"^#+ (.+)$", text, re.M)]


REFERENCE = re.compile(r"""(?:see|under|in|as in|runbook's)\s+"([^"]+)\"""")


def test_runbook_has_no_numbered_section_references() -> None:
    assert re.findall(r"\bsection \d", RUNBOOK + README) == []


@pytest.mark.parametrize(("name", "text"), [("RUNBOOK", RUNBOOK), ("README", README)])
def test_each_quoted_runbook_reference_names_exactly_one_heading(name: str, text: str) -> None:
    headings = _headings(RUNBOOK)
    references = [" ".join(ref.replace("`", "").split()) for ref in REFERENCE.findall(text)]
    assert len(references) >= (10 if name == "RUNBOOK" else 2)
    for ref in references:
        matches = [h for h in headings if h.startswith(ref)]
        assert len(matches) == 1, f"{name}: {ref!r} names {matches or 'no heading'}"


def test_production_venv_is_not_the_checkout_venv() -> None:
    """`make test` and `make clean` own the checkout's .venv: production lives beside it."""
    for name, text in {"RUNBOOK": RUNBOOK, "README": README, "venv script": VENV_SCRIPT}.items():
        assert "/volume1/aegis/token-refresh/.venv" not in text, name
        assert PRODUCTION_VENV in text, name
    assert f'VENV="${{VENV:-{PRODUCTION_VENV}}}"' in VENV_SCRIPT
    assert 'TOKEN_REFRESH="${TOKEN_REFRESH:-$VENV/bin/token-refresh}"' in VENV_SCRIPT
    assert "rm -rf $(VENV)" in (REPO / "Makefile").read_text()  # what the checkout's .venv is for


def test_venv_script_and_runbook_agree_on_who_installs() -> None:
    header = VENV_SCRIPT.split("set -u")[0]
    assert "as root" in header
    assert "as the token owner" not in header
    assert "/volume1/aegis/token-refresh/` | (build context) | `root:root`" in RUNBOOK
    assert f"sudo python3 -m venv {PRODUCTION_VENV}" in RUNBOOK


def test_runbook_does_not_ask_to_add_the_metrics_extra_to_the_image() -> None:
    assert "in the image too" not in RUNBOOK
    assert "'.[metrics]'" in (REPO / "Dockerfile").read_text()


def test_lock_file_of_another_user_is_documented_as_74() -> None:
    symptom = section(RUNBOOK, "By symptom")
    line = next(ln for ln in symptom.splitlines() if "Lock file of another user" in ln)
    assert "exit 74" in line
    assert "exit 75" not in section(RUNBOOK, "UID and GID")


def test_status_severity_order_is_the_one_errors_uses() -> None:
    order = errors.severity_text()
    for path in (REPO / "README.md", REPO / "docs" / "RUNBOOK.md"):
        assert f"**{order}**" in path.read_text(), f"{path.name}: the status severity order is {order}"
