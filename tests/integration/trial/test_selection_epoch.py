"""`selection.epoch: best` over whole trials on tiny synthetic data, several epochs each: the
reported figures and the kept weights are the selected epoch's, a checkpoint hands them to
`--weights`, and a resumed trial selects as an uninterrupted one."""

from __future__ import annotations

import copy

import pytest
import torch

from asha_tune.sweep.checkpoints import final_weights
from asha_tune.trial import selection
from asha_tune.trial.model import file_state_dict
from asha_tune.trial.training import run_trial
from tests.helpers.data import tiny_config


@pytest.mark.parametrize("protocol", ["entropy", "source_val"])
def test_best_reports_and_keeps_the_epoch_its_protocol_selects(tiny_runtime, protocol):
    config = tiny_config(selection={"protocol": protocol, "epoch": "best"}, train={"epochs": 4, "lr": 0.02})
    seen: list[tuple[dict, dict]] = []
    last: list[dict] = []

    def report(metrics, state):
        model = {k: v.clone() for k, v in state["model"].items()}
        seen.append((dict(metrics), model))
        last[:] = [final_weights(state)]

    result = run_trial(config, tiny_runtime, report=report)
    metric, direction = selection.selection_metric(protocol)
    raw = [m[f"raw_{metric}"] for m, _ in seen]
    chosen = raw.index(min(raw) if direction == "min" else max(raw))  # the first of the best
    final = result.final
    assert final["selected_epoch"] == chosen + 1
    for key in ("val_acc", "acc_cartoon", "acc_cartoon_se", "target_acc", "target_entropy", "snd_cartoon"):
        assert final[key] == seen[chosen][0][f"raw_{key}"], key  # the selected epoch's figures
        assert final[f"raw_{key}"] == seen[-1][0][f"raw_{key}"], key  # the last epoch's own
    assert final["train_loss"] == seen[-1][0]["train_loss"]  # training figures stay the epoch's
    # Each report carries the best epoch so far.
    for e, (m, _) in enumerate(seen):
        best_so_far = raw.index((min if direction == "min" else max)(raw[: e + 1]))
        assert m["selected_epoch"] == best_so_far + 1
    # The weights kept are the selected epoch's, not the last's.
    (kept,) = last
    assert kept["selected_epoch"] == chosen + 1
    assert all(torch.equal(kept["model"][k], seen[chosen][1][k]) for k in kept["model"])
    if chosen != 3:
        assert not all(torch.equal(kept["model"][k], seen[-1][1][k]) for k in kept["model"])


def test_a_best_checkpoint_gives_its_selected_weights_to_weights_path(tiny_runtime, tmp_path):
    config = tiny_config(selection={"protocol": "entropy", "epoch": "best"}, train={"epochs": 3, "lr": 0.05})
    states = []
    run_trial(config, tiny_runtime, report=lambda m, s: states.append(s))
    path = tmp_path / "ck.pt"
    torch.save(states[-1], path)
    loaded = file_state_dict(path)
    selected = states[-1]["selected"]["model"]
    assert all(torch.equal(loaded[k], selected[k]) for k in selected)


def test_best_resumes_bit_for_bit(tiny_runtime):
    config = tiny_config(selection={"protocol": "im", "epoch": "best"}, train={"epochs": 3, "lr": 0.05})
    states, full = [], []
    whole = run_trial(config, tiny_runtime, report=lambda m, s: full.append(copy.deepcopy(s)))
    resumed = run_trial(config, tiny_runtime, report=lambda m, s: states.append(s), resume=full[1])
    strip = lambda h: [{k: v for k, v in m.items() if not k.startswith("time_")} for m in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)
    a, b = full[-1]["selected"], states[-1]["selected"]
    assert a["epoch"] == b["epoch"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
