"""Search spaces: YAML files validated with pydantic, sampled define-by-run.

- params     the parameter types (fixed, float, int, categorical/grid, conv_subset) and the only
             conversion to Optuna's suggest calls
- space      SearchSpace: the fixed sections, search and scheduler settings, and trial configs
- loading    finding, reading, `--set` overrides and validation (one line per problem)
- describe   the dry run's text, the selection line, what a space needs of a machine

May import pydantic, yaml, trial's torch-free modules (config, registry) and the kernel.
"""

from __future__ import annotations

from asha_tune.defaults import SPACES_ENV
from asha_tune.spaces.describe import describe, describe_selection, domain_choices, needs, weight_choices
from asha_tune.spaces.loading import (
    PACKAGE_SPACES,
    apply_overrides,
    find_space,
    list_spaces,
    load_space,
    read_yaml,
    settable_keys,
    space_dirs,
)
from asha_tune.spaces.params import (
    PARAM_TYPES,
    Categorical,
    ConvSubset,
    Fixed,
    FloatRange,
    IntRange,
    Param,
    Suggester,
)
from asha_tune.spaces.space import (
    Resources,
    SchedulerSettings,
    SearchSettings,
    SearchSpace,
    trial_paths,
)

__all__ = [
    "PACKAGE_SPACES",
    "PARAM_TYPES",
    "SPACES_ENV",
    "Categorical",
    "ConvSubset",
    "Fixed",
    "FloatRange",
    "IntRange",
    "Param",
    "Resources",
    "SchedulerSettings",
    "SearchSettings",
    "SearchSpace",
    "Suggester",
    "apply_overrides",
    "describe",
    "describe_selection",
    "domain_choices",
    "find_space",
    "list_spaces",
    "load_space",
    "needs",
    "read_yaml",
    "settable_keys",
    "space_dirs",
    "trial_paths",
    "weight_choices",
]
