"""tests/container needs podman and the image that tests/container/run.sh builds: it is collected
only under `make container-test`, which sets the variable; the plain `pytest` of `make test`
leaves it out."""

from __future__ import annotations

import os

collect_ignore_glob: list[str] = (
    [] if os.environ.get("TOKEN_REFRESH_CONTAINER_TEST") == "1" else ["test_*.py"]
)
