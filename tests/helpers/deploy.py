"""The commands deploy/ documents, read from the files (never copied into tests), and made to run
on this machine: the placeholders a user fills in (the tracking server's and database's hosts, the
shared filesystem) replaced by what a test started."""

from __future__ import annotations

import re
import shlex

import yaml

from tests.helpers.data import REPO

DEPLOY = REPO / "deploy"


def documented_ray_exec(text: str) -> str:
    """The `asha-tune launch` command a file documents for `ray exec`, as one line."""
    found = re.search(r'ray exec deploy/ray-cluster.aws.yaml "(asha-tune launch[^"]+)"', text, re.S)
    assert found, "no documented ray exec launch"
    return re.sub(r"\\\n#?\s*", " ", found.group(1))


def rayjob_entrypoint() -> str:
    """The entrypoint of deploy/kuberay/rayjob.yaml."""
    job = yaml.safe_load((DEPLOY / "kuberay" / "rayjob.yaml").read_text())
    return " ".join(job["spec"]["entrypoint"].split())


def localized(command: str, values: dict[str, str], *extra: str) -> list[str]:
    """`command`'s words with each flag in `values` given that value instead (the documented
    placeholders), then `extra` (what makes the sweep CPU-sized here), as argv."""
    words = shlex.split(command)
    for i, word in enumerate(words[:-1]):
        if word in values:
            words[i + 1] = values[word]
    missing = [flag for flag in values if flag not in words]
    assert not missing, f"the documented command has no {missing}: {command}"
    return [*words, *extra]
