"""Environment variables set for the span of a block, then put back as they were.

Ray and MLflow read settings from the environment (Ray once, at import and in the processes
`ray.init` starts; MLflow at import and at some calls). asha-tune sets what it needs only while
it needs it, so a notebook or a test that calls it keeps its own environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def scoped_environ(updates: Mapping[str, str | None], keep_existing: bool = False) -> Iterator[None]:
    """Set (or, for None, unset) `updates` inside the block; restore every touched name after.

    With `keep_existing`, a variable the user already set wins over the update.
    """
    saved = {name: os.environ.get(name) for name in updates}
    try:
        for name, value in updates.items():
            if keep_existing and saved[name] is not None:
                continue
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
