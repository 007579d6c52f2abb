#!/usr/bin/env python3
"""A test stand-in for supercronic: `make container-test` builds the Dockerfile with this file as
the supercronic stage's /supercronic, since the real release binary is a GitHub download.

It keeps what the deployment relies on (docs/RUNBOOK.md): it reads the crontab (5 fields, or 7
with seconds first and a year last, as supercronic accepts), runs each job with `/bin/sh -c` in
the container's environment, passes the job's output through (-passthrough-logs), never overlaps
a job with itself, and on SIGTERM or SIGINT lets a running job finish, then exits 0.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import subprocess
import sys
import time

stopping: list[int] = []


def log(level: str, msg: str, **fields: object) -> None:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    extra = "".join(f' {k}="{v}"' for k, v in fields.items())
    print(f'time="{now}" level={level} msg="{msg}"{extra}', file=sys.stderr, flush=True)


def field(spec: str, low: int, high: int) -> set[int]:
    """One cron field: *, N, A-B, any of them /STEP, comma lists."""
    values: set[int] = set()
    for part in spec.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, b = base.split("-")
            start, end = int(a), int(b)
        else:
            start = int(base)
            end = high if step else start
        values.update(range(start, end + 1, int(step or 1)))
    return values


CRON_FIELD = re.compile(r"^[0-9*/,-]+$")


class Job:
    def __init__(self, line: str) -> None:
        words = line.split()
        # 7 fields (seconds first, a year last) when the 6th and 7th words are cron fields
        count = 7 if len(words) > 7 and all(CRON_FIELD.match(w) for w in words[5:7]) else 5
        self.schedule, self.command = " ".join(words[:count]), " ".join(words[count:])
        sec, minute, hour, dom, month, dow = words[:6] if count == 7 else ["0", *words[:5]]
        self.sec = field(sec, 0, 59)
        self.minute = field(minute, 0, 59)
        self.hour = field(hour, 0, 23)
        self.dom = field(dom, 1, 31)
        self.month = field(month, 1, 12)
        self.dow = {d % 7 for d in field(dow, 0, 7)}
        self.dom_any, self.dow_any = dom == "*", dow == "*"

    def matches(self, t: dt.datetime) -> bool:
        day_dom, day_dow = t.day in self.dom, (t.isoweekday() % 7) in self.dow
        # cron: when both day fields are restricted, either may match
        day = (day_dom and day_dow) if (self.dom_any or self.dow_any) else (day_dom or day_dow)
        return (
            t.second in self.sec
            and t.minute in self.minute
            and t.hour in self.hour
            and t.month in self.month
            and day
        )

    def next_after(self, t: dt.datetime) -> dt.datetime:
        t = t.replace(microsecond=0)
        for _ in range(366 * 24 * 3600):
            t += dt.timedelta(seconds=1)
            if self.matches(t):
                return t
        raise SystemExit(f"supercronic stand-in: nothing in a year matches {self.schedule!r}")


def read_crontab(path: str) -> list[Job]:
    jobs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" not in line.split()[0]:
                jobs.append(Job(line))
    return jobs


def on_signal(signum: int, frame: object) -> None:
    if not stopping:
        log("info", f"received {signal.Signals(signum).name.lower().removeprefix('sig')}, shutting down")
    stopping.append(signum)


def main(argv: list[str]) -> int:
    crontab = [a for a in argv if not a.startswith("-")]
    if len(crontab) != 1:
        print("usage: supercronic [-passthrough-logs] CRONTAB", file=sys.stderr)
        return 2
    jobs = read_crontab(crontab[0])
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for position, job in enumerate(jobs):
        log("info", "read crontab", **{"job.position": position, "job.schedule": job.schedule})
    due = [job.next_after(dt.datetime.now()) for job in jobs]
    iteration = 0
    while not stopping:
        now = dt.datetime.now()
        ready = [i for i, when in enumerate(due) if when <= now]
        if not ready:
            time.sleep(0.1)
            continue
        for i in ready:
            job = jobs[i]
            fields = {"iteration": iteration, "job.command": job.command, "job.position": i}
            log("info", "starting", **fields)
            proc = subprocess.Popen(["/bin/sh", "-c", job.command])
            waiting_said = False
            while proc.poll() is None:
                if stopping and not waiting_said:
                    log("info", "waiting for jobs to finish")
                    waiting_said = True
                time.sleep(0.1)
            if proc.returncode == 0:
                log("info", "job succeeded", **fields)
            else:
                log("error", f"error running command: exit status {proc.returncode}", **fields)
            iteration += 1
            # a job that ran past its next time skips it instead of overlapping itself
            due[i] = job.next_after(dt.datetime.now())
            if stopping:
                break
    log("info", "exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
