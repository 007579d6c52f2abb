"""A separate process that parses the cache in a loop until a stop file appears (scenario 3)."""

from __future__ import annotations

import json
import os
import sys

from token_refresh.errors import TokenRefreshError
from token_refresh.store import load as load_cache


def main() -> None:
    cache, stop, ready = sys.argv[1:4]
    reads, torn, tokens = 0, [], set()
    with open(ready, "w"):
        pass
    while not os.path.exists(stop) or reads < 100:
        try:
            token = load_cache(cache)  # one open + read of the whole file, as a consumer does
        except TokenRefreshError as e:
            torn.append(str(e))
            continue
        reads += 1
        tokens.add(token.access_token[-12:])
    print(json.dumps({"reads": reads, "torn": torn[:5], "torn_count": len(torn), "tokens": len(tokens)}))


if __name__ == "__main__":
    main()
