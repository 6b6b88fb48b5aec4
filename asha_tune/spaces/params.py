"""Parameter types of a search space: how each one samples, enumerates and describes itself.

Conversion to Optuna happens here and nowhere else: `suggest` works on any object with Optuna's
`suggest_*` methods (a real trial, or the dry run's enumeration).
"""

from __future__ import annotations

import itertools
import json
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from asha_tune.trial.config import SHAPEABLE_CONVS, check_convs


class Suggester(Protocol):
    """What `suggest` needs of an Optuna trial."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...


def _encode(choice: Any) -> Any:
    """Optuna's categorical choices must be scalars: lists (conv sets) become JSON text."""
    return json.dumps(choice) if isinstance(choice, (list, dict)) else choice


def _matches(value: Any, wanted: Any) -> bool:
    return value in wanted if isinstance(wanted, list) else value == wanted


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Only sample this parameter when earlier values match, e.g. {shaping.mode: random}.
    when: dict[str, Any] = {}

    def active(self, values: dict[str, Any]) -> bool:
        return all(_matches(values.get(k), v) for k, v in self.when.items())

    def optuna_params(self, name: str, value: Any) -> dict[str, Any]:
        """The Optuna parameters that make `suggest` return `value` (for enqueued grid points)."""
        return {name: _encode(value)}


class Fixed(_Param):
    type: Literal["fixed"]
    value: Any
    pinned: bool = False  # set by `--set` on a parameter the file searches (shown by --dry-run)

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
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

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

    def choices(self) -> list[float]:
        if self.step is None:
            raise ValueError("a float range without step cannot be enumerated for a grid")
        n = int(round((self.high - self.low) / self.step))
        return [round(self.low + i * self.step, 10) for i in range(n + 1)]

    def describe(self) -> str:
        extra = " log" if self.log else f" step {self.step}" if self.step else ""
        return f"float [{self.low}, {self.high}]{extra}"


class IntRange(_Param):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntRange:
        if self.low >= self.high:
            raise ValueError(f"empty range: low {self.low} is not below high {self.high}")
        return self

    def suggest(self, trial: Suggester, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list[int]:
        return [self.low, self.high]

    def choices(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def describe(self) -> str:
        return f"int [{self.low}, {self.high}]" + (f" step {self.step}" if self.step > 1 else "")


class Categorical(_Param):
    type: Literal["categorical", "grid"]
    values: list[Any] = Field(min_length=1)

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
    allowed: list[int] = list(SHAPEABLE_CONVS)
    min_size: int = Field(default=1, ge=1)
    max_size: int = Field(default=1, ge=1)

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
