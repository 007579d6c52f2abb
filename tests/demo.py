"""``make demo``: the real program, end to end, against the fake Saxo endpoint on 127.0.0.1.

No Saxo account needed: it writes a token cache that is due for refresh into a temporary
folder, runs ``token-refresh run`` twice (a refresh, then a valid run) and ``token-refresh status``.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fake_saxo import FakeSaxo
from support import base_env


def show(cmd: list[str], env: dict[str, str]) -> int:
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    result = subprocess.run(cmd, env=env, check=False)
    print(f"(exit status {result.returncode})", flush=True)
    return result.returncode


def main() -> int:
    with FakeSaxo() as saxo, tempfile.TemporaryDirectory(prefix="token-refresh-demo-") as tmp:
        cache = Path(tmp, "saxobank_tokens_live.json")
        config = Path(tmp, "token_refresh.yaml")
        config.write_text(f"environment: live\ntoken_url: {saxo.token_url}\ncache_path: {cache}\n")
        # 1000 s old: 200 s left on a 1200 s access token, so the next run must refresh it
        seed = saxo.seed_cache(age=1000, consumer_note="kept across rewrites")
        cache.write_text(json.dumps(seed, indent=2) + "\n")
        cache.chmod(0o600)
        env = base_env()  # the fake app's credentials, nothing inherited that could interfere
        print(f"fake Saxo token endpoint: {saxo.token_url}")
        print(f"token cache: {cache} (issued 1000 s ago, due for refresh)")
        codes = [
            show(["token-refresh", "run", "--config", str(config)], env),
            show(["token-refresh", "run", "--config", str(config)], env),
            show(["token-refresh", "status", "--config", str(config)], env),
        ]
        print(
            f"\nthe server saw {len(saxo.requests)} token request(s), {saxo.reuses} reused refresh token(s)"
        )
        print(f"fields kept: consumer_note={json.loads(cache.read_text()).get('consumer_note')!r}")
        if codes != [0, 0, 0] or saxo.refreshes != 1:
            print("demo FAILED", file=sys.stderr)
            return 1
        print("demo OK: one refresh, then a valid run")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
