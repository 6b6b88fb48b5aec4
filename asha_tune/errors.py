"""Errors a user can act on.

Everything raised as an `AshaTuneError` is the user's input or environment being wrong, not a bug:
the CLI prints it as one line (no traceback) and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Iterator


class AshaTuneError(Exception):
    """A problem the user can fix; `str(err)` is the one-line message."""

    exit_code = 1


class ConfigError(AshaTuneError, ValueError):
    """An invalid configuration value (flag, YAML field, override)."""

    exit_code = 2

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(AshaTuneError):
    """The data root, a domain folder or an image cannot be used."""


class WeightsError(AshaTuneError):
    """Pretrained weights cannot be found, fetched or loaded."""


class DivergedError(AshaTuneError):
    """Training produced a non-finite loss; the trial cannot continue."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch


class ClusterLostError(AshaTuneError):
    """The Ray cluster's head stopped answering while a sweep ran (its records are closed); the
    exit status is the signal the head watch ends the driver with (SIGQUIT)."""

    exit_code = 3


class NoSpaceError(AshaTuneError):
    """The disk under --results-dir has (or would have) too little space for the sweep."""

    exit_code = 4


class DeviceError(ConfigError):
    """The device a trial was given cannot be used (e.g. a GPU that this torch build cannot drive)."""


def first_line(err: BaseException) -> str:
    """The first non-blank line of an error's message, for a one-line report; an error without a
    message (`OSError()`), or whose message cannot be built, is named by its type: reporting an
    error never fails itself."""
    try:
        text = str(err)
    except Exception:  # a broken __str__
        text = ""
    return next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)


def chain(err: BaseException) -> Iterator[BaseException]:
    """The error, then what it was raised from or while handling (`__cause__`, else
    `__context__`), and so on: each error once, so a chain that loops back ends."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


# The command whose errors the CLI prints ("asha-tune launch"); set by asha_tune.cli.main, read by
# the processes that print for it (the head watch, sweep/watch.py).
program = "asha-tune"
