"""How an error is reported in one line, and how its chain is walked (errors.py), at the helpers
and where a user meets them: an error without a message (`OSError()`) once crashed the report of
it with an IndexError, a traceback instead of the line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asha_tune.cli import main
from asha_tune.errors import AshaTuneError, ConfigError, chain, first_line


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def test_the_first_line_of_an_error_is_never_empty():
    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(ValueError("\n  \n  indented first line  \nsecond")) == "indented first line"
    assert first_line(OSError()) == "OSError"  # no message: its type
    assert first_line(ConfigError("")) == "ConfigError"
    assert first_line(KeyError("")) == "''"  # a KeyError prints its key's repr
    assert first_line(_UnprintableError()) == "_UnprintableError"


def test_the_chain_follows_causes_then_contexts():
    try:
        try:
            raise OSError("disk")
        except OSError as inner:
            raise ValueError("while reading") from inner
    except ValueError as err:
        outer = err
    assert [str(e) for e in chain(outer)] == ["while reading", "disk"]
    try:
        try:
            raise KeyError("a")
        except KeyError:  # raised while handling: the implicit context is what is walked
            raise RuntimeError("during")  # noqa: B904
    except RuntimeError as err:
        assert [type(e) for e in chain(err)] == [RuntimeError, KeyError]


def test_a_chain_that_loops_back_ends():
    a, b = ValueError("a"), OSError("b")
    a.__cause__, b.__context__ = b, a
    assert list(chain(a)) == [a, b]
    itself = RuntimeError("self")
    itself.__context__ = itself
    assert list(chain(itself)) == [itself]


def _fails_without_a_message(*args, **kwargs):
    raise OSError()


def test_launch_reports_weights_that_fail_without_a_message_in_one_line(
    synthetic_pacs, tmp_path, capsys, monkeypatch
):
    """The weights check before a sweep (preflight) names the error's type when it has no text."""
    weights = tmp_path / "weights.pth"
    torch.save({}, weights)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch, "load", _fails_without_a_message)
    code = main(
        ["launch", "--space", "quickstart", "--data-root", str(synthetic_pacs), "--weights", str(weights)]
    )
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"asha-tune launch: error: cannot load weights file {weights}: OSError"


def test_a_trial_reports_a_checkpoint_that_fails_without_a_message_in_one_line(
    synthetic_pacs, tmp_path, capsys, monkeypatch
):
    """`asha-tune trial --resume` reads its checkpoint first; a read that fails bare is one line."""
    checkpoint = tmp_path / "trial.pt"
    checkpoint.write_bytes(b"a checkpoint")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch, "load", _fails_without_a_message)
    argv = ["trial", "--data-root", str(synthetic_pacs), "--target", "cartoon", "--weights", "none"]
    code = main([*argv, "--resume", "--checkpoint", str(checkpoint), "--cache-dir", str(tmp_path / "cache")])
    assert code == AshaTuneError.exit_code
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == f"asha-tune trial: error: cannot read checkpoint {checkpoint}: OSError"
    assert not any("Traceback" in line for line in lines)
    assert not Path(tmp_path / "mlflow.db").exists()  # nothing was recorded


def test_weights_that_do_not_fit_are_one_line_whatever_torch_says(tmp_path, monkeypatch):
    """The shape-mismatch detail is torch's second line; a message of one line ending in a line
    break, or none, once raised an IndexError or gave an empty detail."""
    from asha_tune.errors import WeightsError
    from asha_tune.trial.model import build_model

    weights = tmp_path / "weights.pth"
    torch.save({}, weights)
    for message, detail in [
        (
            "Error(s) in loading state_dict for ResNet:\n\tsize mismatch for fc.bias",
            "size mismatch for fc.bias",
        ),
        ("one line only\n", "one line only"),
        ("", "RuntimeError"),
    ]:

        def refuse(*args, message=message, **kwargs):
            raise RuntimeError(message)

        monkeypatch.setattr(torch.nn.Module, "load_state_dict", refuse)
        with pytest.raises(WeightsError) as err:
            build_model(str(weights))
        assert str(err.value) == f"weights {weights} do not fit resnet18: {detail}"
