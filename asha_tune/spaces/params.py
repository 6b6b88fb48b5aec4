"""Parameter types of a search space: how each one samples, enumerates and describes itself.

Conversion to Optuna happens here and nowhere else: `suggest` works on any object with Optuna's
`suggest_*` methods (a real trial, or the dry run's enumeration).
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, Field, field_validator, model_validator

from asha_tune.trial.config import MODEL_CONFIG, SHAPEABLE_CONVS, Bool, Float, Int, check_convs


class Suggester(Protocol):
    """What `suggest` needs of an Optuna trial."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...


# The most trials a sweep runs (a grid of more is refused by its count, before one point is
# built), and so the most values a categorical lists: more could never each be tried.
MAX_TRIALS = 10_000


def _encode(choice: Any) -> Any:
    """Optuna's categorical choices must be scalars: lists (conv sets) become JSON text."""
    return json.dumps(choice) if isinstance(choice, (list, dict)) else choice


def _matches(value: Any, wanted: Any) -> bool:
    return value in wanted if isinstance(wanted, list) else value == wanted


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Param(BaseModel):
    model_config = MODEL_CONFIG
    # Only sample this parameter when earlier values match, e.g. {shaping.mode: random}.
    when: dict[str, Any] = {}

    def active(self, values: dict[str, Any]) -> bool:
        return all(_matches(values.get(k), v) for k, v in self.when.items())

    def choices(self) -> list[Any]:
        """Every value, in the order a grid crosses them."""
        raise NotImplementedError

    def size(self) -> int:
        """How many values a grid crosses, counted without listing them (a range of 10^9 values
        is refused by its count, never built)."""
        return len(self.choices())

    def can_take(self, value: Any) -> bool:
        """Whether a draw can give `value`: a `when` that waits for any other never holds."""
        return value in self.choices()

    def optuna_params(self, name: str, value: Any) -> dict[str, Any]:
        """The Optuna parameters that make `suggest` return `value` (for enqueued grid points)."""
        return {name: _encode(value)}


class Fixed(_Param):
    type: Literal["fixed"]
    value: Any
    pinned: Bool = False  # set by `--set` on a parameter the file searches (shown by --dry-run)

    def suggest(self, trial: Suggester, name: str) -> Any:
        return self.value

    def choices(self) -> list[Any]:
        return [self.value]

    def corners(self) -> list[Any]:
        return self.choices()

    def optuna_params(self, name: str, value: Any) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        return f"fixed {self.value!r}" + (" (pinned by --set: not searched)" if self.pinned else "")


class FloatRange(_Param):
    type: Literal["float"]
    low: Float
    high: Float
    log: Bool = False
    step: Float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatRange:
        if self.low >= self.high:
            raise ValueError(f"empty range: low {self.low} is not below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step:
            raise ValueError("a log range cannot have a step")
        return self

    def suggest(self, trial: Suggester, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list[float]:
        return [self.low, self.high]

    def size(self) -> int:
        if self.step is None:
            raise ValueError("a float range without step cannot be enumerated for a grid")
        return int(round((self.high - self.low) / self.step)) + 1

    def can_take(self, value: Any) -> bool:
        return _is_number(value) and self.low <= value <= self.high

    def choices(self) -> list[float]:
        step = self.step or 0.0
        return [round(self.low + i * step, 10) for i in range(self.size())]

    def describe(self) -> str:
        extra = " log" if self.log else f" step {self.step}" if self.step else ""
        return f"float [{self.low}, {self.high}]{extra}"


class IntRange(_Param):
    type: Literal["int"]
    low: Int
    high: Int
    step: Int = Field(default=1, ge=1)
    log: Bool = False

    @model_validator(mode="after")
    def _range(self) -> IntRange:
        if self.low >= self.high:
            raise ValueError(f"empty range: low {self.low} is not below high {self.high}")
        if self.log and self.low < 1:  # as Optuna's IntDistribution
            raise ValueError(f"a log range needs low >= 1 (got low {self.low})")
        if self.log and self.step != 1:
            raise ValueError("a log range cannot have a step")
        return self

    def suggest(self, trial: Suggester, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list[int]:
        return [self.low, self.high]

    def size(self) -> int:
        return (self.high - self.low) // self.step + 1

    def can_take(self, value: Any) -> bool:
        return (
            _is_number(value)
            and isinstance(value, int)
            and value in range(self.low, self.high + 1, self.step)
        )

    def choices(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def describe(self) -> str:
        return f"int [{self.low}, {self.high}]" + (f" step {self.step}" if self.step > 1 else "")


class Categorical(_Param):
    type: Literal["categorical", "grid"]
    values: list[Any] = Field(min_length=1, max_length=MAX_TRIALS)

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[Any]) -> list[Any]:
        encoded = [_encode(v) for v in values]
        if len(set(map(str, encoded))) != len(encoded):
            raise ValueError("a value is listed twice")
        return values

    def suggest(self, trial: Suggester, name: str) -> Any:
        encoded = [_encode(v) for v in self.values]
        return self.values[encoded.index(trial.suggest_categorical(name, encoded))]

    def choices(self) -> list[Any]:
        return list(self.values)

    def corners(self) -> list[Any]:
        return self.choices()

    def describe(self) -> str:
        return f"{self.type} {self.values}"


class ConvSubset(_Param):
    """A set of convs: its size, then which convs of that size (one categorical per size)."""

    type: Literal["conv_subset"]
    allowed: list[Int] = list(SHAPEABLE_CONVS)
    min_size: Int = Field(default=1, ge=1)
    max_size: Int = Field(default=1, ge=1)

    @field_validator("allowed")
    @classmethod
    def _allowed(cls, allowed: list[int]) -> list[int]:
        return check_convs(allowed)

    @model_validator(mode="after")
    def _sizes(self) -> ConvSubset:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} is above max_size {self.max_size}")
        if self.max_size > len(self.allowed):
            raise ValueError(f"max_size {self.max_size} is above the {len(self.allowed)} allowed convs")
        return self

    def _of_size(self, size: int) -> list[str]:
        return [",".join(map(str, c)) for c in itertools.combinations(self.allowed, size)]

    def suggest(self, trial: Suggester, name: str) -> list[int]:
        size = self.min_size
        if self.max_size > self.min_size:
            size = trial.suggest_int(f"{name}.size", self.min_size, self.max_size)
        options = self._of_size(size)
        pick = options[0] if len(options) == 1 else trial.suggest_categorical(f"{name}.size{size}", options)
        return [int(c) for c in pick.split(",")]

    def optuna_params(self, name: str, value: list[int]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.max_size > self.min_size:
            params[f"{name}.size"] = len(value)
        if len(self._of_size(len(value))) > 1:
            params[f"{name}.size{len(value)}"] = ",".join(map(str, value))
        return params

    def size(self) -> int:
        return sum(math.comb(len(self.allowed), k) for k in range(self.min_size, self.max_size + 1))

    def can_take(self, value: Any) -> bool:
        return (
            isinstance(value, list)
            and self.min_size <= len(value) <= self.max_size
            and all(isinstance(c, int) and c in self.allowed for c in value)
            and value == sorted(set(value))
        )

    def choices(self) -> list[list[int]]:
        return [
            list(c)
            for k in range(self.min_size, self.max_size + 1)
            for c in itertools.combinations(self.allowed, k)
        ]

    def corners(self) -> list[list[int]]:
        return [self.allowed[: self.min_size], self.allowed[-self.max_size :]]

    def describe(self) -> str:
        return f"conv subset of {self.allowed}, size {self.min_size}..{self.max_size}"


Param = Annotated[Fixed | FloatRange | IntRange | Categorical | ConvSubset, Field(discriminator="type")]
PARAM_TYPES = ("fixed", "float", "int", "categorical", "grid", "conv_subset")
