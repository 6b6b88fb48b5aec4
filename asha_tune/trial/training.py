"""One trial: train the shaped ResNet-18 on the source, evaluate every target after each epoch.

`run_trial` knows nothing of Ray or MLflow. After every epoch it calls `report(metrics, state)`;
`state` is a complete checkpoint (model, optimiser, scheduler, scaler, every generator), so the
caller decides where to keep it, and `run_trial(..., resume=state)` continues bit-for-bit.

Each evaluation of a reported target also feeds its logits to `TargetScores` (scores.py), so the
label-free scores cost no second pass. Under `selection.epoch: best` a trial keeps the epoch whose
selection metric is best so far (its figures, and a copy of its weights in `state["selected"]`):
every report carries that epoch's figures under their usual names, the epoch's own under
`raw_<name>`, and `selected_epoch`; the weights a trial ends with are the selected epoch's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from asha_tune.errors import AshaTuneError, ConfigError, DeviceError, DivergedError, first_line
from asha_tune.trial import selection
from asha_tune.trial.augmentation import augment, normalize
from asha_tune.trial.config import Runtime, TrialConfig
from asha_tune.trial.devices import cuda_problem, describe_device, has_unusable_gpu
from asha_tune.trial.loading import (
    Images,
    TrialData,
    epoch_order,
    load_trial_data,
    spans,
    test_batches,
    train_batches,
)
from asha_tune.trial.model import build_model
from asha_tune.trial.pairing import epoch_pairing
from asha_tune.trial.registry import MODES
from asha_tune.trial.scores import TargetScores
from asha_tune.trial.selection import DEVICE_KEY
from asha_tune.trial.shaping import attach

log = logging.getLogger(__name__)

Metrics = dict[str, Any]  # numbers, the split hash (selection.SPLIT_HASH) and the device used
Report = Callable[[Metrics, dict[str, Any]], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if has_unusable_gpu():  # not silent: hours on the CPU where a GPU was meant
            log.warning("training on the CPU: this machine has a GPU, but %s", cuda_problem())
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device cuda: {cuda_problem()} (use --device auto or cpu)")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32. auto = fp16 on CUDA as the authors did."""
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return None
    if device.type == "cpu" and precision == "fp16":
        raise ConfigError("precision fp16 needs CUDA; use fp32 or bf16 on the CPU")
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


DEVICE_STREAMS = ("augment", "mask")  # the generators that live on the trial's device


@dataclass
class Generators:
    """Every random stream of a trial, seeded from the trial seed, saved in every checkpoint."""

    order: torch.Generator  # epoch shuffles (CPU, so the order is the same on any device)
    augment: torch.Generator  # crops and flips (trial device)
    mask: torch.Generator  # Bernoulli masks (trial device)
    pair: torch.Generator  # target images for source batches, target_pairing shuffled (CPU)

    @classmethod
    def seeded(cls, seed: int, device: torch.device) -> Generators:
        def gen(offset: int, dev: torch.device) -> torch.Generator:
            return torch.Generator(device=dev).manual_seed(seed * 1000 + offset)

        cpu = torch.device("cpu")
        return cls(gen(1, cpu), gen(2, device), gen(3, device), gen(4, cpu))

    def state(self) -> dict[str, Tensor]:
        return {name: g.get_state() for name, g in vars(self).items()}

    def load(self, state: dict[str, Tensor]) -> list[str]:
        """Restore every stream; returns the device streams that were re-seeded instead.

        A checkpoint from another device type holds the other generator's state (a CUDA Philox
        state is 16 bytes, a CPU Mersenne Twister 5,056): such a stream is re-seeded from a hash
        of the saved state, so a resume is deterministic, though not the uninterrupted run.
        """
        reseeded = []
        for name, g in vars(self).items():
            saved = state[name]
            if saved.numel() == g.get_state().numel():
                g.set_state(saved)
            elif name in DEVICE_STREAMS:
                g.manual_seed(reseed(saved))
                reseeded.append(name)
            else:
                raise AshaTuneError(
                    f"checkpoint's {name} generator state ({saved.numel()} bytes) is not a CPU "
                    f"generator's ({g.get_state().numel()} bytes): not resuming"
                )
        return reseeded


def reseed(saved: Tensor) -> int:
    """A seed for a device stream from its saved state on another device type (documented in
    Trial.load): the same checkpoint always gives the same seed, every epoch's state another."""
    digest = hashlib.sha256(saved.to(torch.uint8).numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def zero_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Create SGD's momentum buffers as zeros before the first step.

    torch's fused SGD makes them with `empty_like` on the first step and, when the GradScaler
    found an inf there (ordinary at its initial scale of 2**16), skips the update but keeps the
    uninitialised buffers, which poison every later step. Zeros give the same first update
    (0.9 * 0 + g is g exactly, as dampening is 0), so results are unchanged otherwise.
    """
    for group in optimizer.param_groups:
        if group["momentum"]:
            for p in group["params"]:
                optimizer.state[p].setdefault(
                    "momentum_buffer", torch.zeros_like(p, memory_format=torch.preserve_format)
                )


@dataclass
class TrialResult:
    config: TrialConfig
    history: list[Metrics] = field(default_factory=list)

    @property
    def final(self) -> Metrics:
        return self.history[-1] if self.history else {}


class Trial:
    """The objects of one trial; `run_trial` is the entry point.

    `data`: the images of a lodo fold model, which shares its trial's (loaded once); `folds`
    then holds, per left-out source domain, the fold model that selects on it.
    """

    def __init__(
        self,
        config: TrialConfig,
        runtime: Runtime,
        data: TrialData | None = None,
        progress: bool | None = None,
    ):
        self.config = config
        self.device = resolve_device(runtime.device)
        self.device_name = describe_device(self.device)
        self.amp = autocast_dtype(config.train.precision, self.device)
        self.channels_last = self.device.type == "cuda"
        train = config.train
        torch.manual_seed(train.seed)
        self.gens = Generators.seeded(train.seed, self.device)
        # The data first: the head has as many outputs as the dataset has classes.
        uses_target_batches = MODES[config.shaping.mode].uses_target_batches
        if data is None:
            data = load_trial_data(config, runtime, self.device, uses_target_batches, progress)
        self.data = data
        model = build_model(train.weights, self.data.num_classes)
        self.mode, self.shaper = attach(model, config.shaping, self.gens.mask)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format)  # type: ignore[call-overload]
        self.folds = {v: Trial(config, runtime, fold) for v, fold in self.data.folds.items()}
        # fused: one kernel for all parameters (5x faster steps than the default on the CPU).
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=train.lr,
            momentum=train.momentum,
            nesterov=train.nesterov,
            weight_decay=train.weight_decay,
            fused=True,
        )
        zero_momentum(self.optimizer)  # fused SGD + an overflowing first step (zero_momentum)
        # MultiStepLR with one milestone: the learning rate drops once, at int(0.8 * epochs), as
        # the authors' StepLR(step_size=int(0.8 * epochs)) does within their 30 epochs.
        step_at = max(1, int(train.lr_step_fraction * train.epochs))
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, [step_at], train.lr_gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.loss_fn = nn.CrossEntropyLoss()
        self.epoch = 0
        self.history: list[Metrics] = []
        # selection.epoch best: {"epoch", "value", "metrics" (its evaluated figures), "model"}.
        self.selected: dict[str, Any] | None = None
        self._data_reported = False

    # -- checkpoints --

    def state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), **self.gens.state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "config": self.config.model_dump(mode="json"),
            "device": self.device.type,
            "epoch": self.epoch,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "classes": list(self.data.classes),
            **({"selected": self.selected} if self.selected is not None else {}),
        }
        if self.folds:  # lodo: every fold model's own state
            state["folds"] = {v: fold.state() for v, fold in self.folds.items()}
        return state

    def load(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: bit-for-bit on the device type that wrote it.

        From another device type (`resume --device`), the weights, momentum, schedule, epoch,
        history and the CPU streams (epoch order, target pairing) carry over exactly; the device
        streams (crops, flips, masks) are re-seeded (Generators.load), a scaler saved disabled
        (fp32 on the CPU) leaves fp16's fresh one at its initial scale, an fp16 scaler's state is
        dropped on the CPU (fp32), and the kernels round differently: a valid continuation, not
        the run an uninterrupted trial on either device would have been.
        """
        if not _same_config(state.get("config"), self.config):
            raise AshaTuneError("checkpoint was written by a different configuration; not resuming")
        if "classes" in state and list(state["classes"]) != list(self.data.classes):
            raise AshaTuneError(
                f"checkpoint was trained on {len(state['classes'])} classes {_few(state['classes'])}; the "
                f"data root now holds {len(self.data.classes)}: {_few(self.data.classes)}; not resuming"
            )
        for v, fold in self.folds.items():
            fold.load(state["folds"][v])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] or not self.scaler.is_enabled():  # {}: saved disabled; keep it fresh
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            cuda_state = state["rng"]["cuda"]
            if cuda_state.numel() == torch.cuda.get_rng_state(self.device).numel():
                torch.cuda.set_rng_state(cuda_state, self.device)
        reseeded = self.gens.load(state["rng"])
        saved_on = state.get("device")  # absent from checkpoints older than this key
        if reseeded or (saved_on is not None and saved_on != self.device.type):
            log.warning(
                "resumed a %s checkpoint on %s: the random crops and masks continue from new seeds "
                "and the numbers differ from an uninterrupted run (Trial.load says what carries over)",
                saved_on or "another device's",
                self.device_name,
            )
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.selected = state.get("selected")

    # -- one epoch --

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None)

    def _input(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_epoch(self, progress: Callable[[int], None] | None = None) -> Metrics:
        train, d = self.config.train, self.config.data
        source, target = self.data.source, self.data.adaptation
        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        batch = train.batch_size
        assert batch is not None  # TrialConfig fills in the mode's batch size
        sizes = self.data.source_sizes or (len(source),)
        cpu_order, lengths = epoch_order(d.source_sampling, sizes, batch, self.gens.order)
        order = cpu_order.to(self.device)
        cuts = spans(lengths)
        paired = cpu_paired = None
        if target is not None:  # the target image of each source image, this epoch
            cpu_paired = epoch_pairing(
                self.config.shaping.target_pairing,
                self.data.source_positions,
                cpu_order,
                len(target),
                self.gens.pair,
            )
            paired = cpu_paired.to(self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        with contextlib.ExitStack() as stack:  # a streamed epoch's readers stop with it
            xs = stack.enter_context(contextlib.closing(train_batches(source, cpu_order, order, cuts)))
            targets = None
            if target is not None and paired is not None and cpu_paired is not None:
                targets = stack.enter_context(
                    contextlib.closing(train_batches(target, cpu_paired, paired, cuts))
                )
            for begin, n in cuts:
                idx = order[begin : begin + n]
                x = self._input(augment(next(xs), d.image_size, self.gens.augment))
                y = source.labels[idx]
                x_target = None
                if targets is not None:  # paired exactly when target is
                    x_target = self._input(augment(next(targets), d.image_size, self.gens.augment))
                with self._autocast():
                    logits = self.mode.train_logits(self.model, self.shaper, x, x_target)
                    loss = self.loss_fn(logits, y)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                loss_sum += loss.detach().float() * len(idx)
                correct += (logits.argmax(1) == y).sum()
                if progress:
                    progress(len(idx))
        self.scheduler.step()
        seen = len(cpu_order)
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise DivergedError(
                f"training loss became {train_loss} in epoch {self.epoch + 1}", self.epoch + 1
            )
        return {"train_loss": train_loss, "source_acc": 100.0 * correct.item() / seen, "lr": lr}

    @torch.no_grad()
    def evaluate(self, images: Images, scores: TargetScores | None = None) -> float:
        """Accuracy in %; `scores`, if given, takes every batch's logits (the label-free scores)."""
        self.model.eval()
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        step = self.config.train.eval_batch_size
        with contextlib.closing(test_batches(images, step)) as batches:
            for batch, labels in batches:
                x = self._input(normalize(batch))
                with self._autocast():
                    logits = self.mode.eval_logits(self.model, self.shaper, x)
                correct += (logits.argmax(1) == labels).sum()
                if scores is not None:
                    scores.add(logits)
        return 100.0 * correct.item() / len(images)

    def selector(self, evaluation_set: str) -> Trial:
        """The model a selection set is evaluated by: its fold model under lodo, else this one."""
        return self.folds.get(evaluation_set, self)

    @property
    def images_per_epoch(self) -> int:
        """Training images of an epoch, the fold models' included (a progress bar's total)."""
        return len(self.data.source) + sum(len(f.data.source) for f in self.folds.values())

    def evaluate_target(self, images: Images) -> tuple[tuple[float, int], dict[str, float]]:
        """A reported target: ((accuracy, n), its label-free scores) from one pass over it."""
        names = selection.SCORE_NAMES if len(images) >= 2 else ("entropy", "im")  # snd needs 2
        tally = TargetScores(names)
        acc = self.evaluate(images, tally)
        return (acc, len(images)), {**dict.fromkeys(selection.SCORE_NAMES, math.nan), **tally.result()}

    def _select(self, evaluated: Metrics) -> Metrics:
        """selection.epoch best: keep this epoch if its selection metric is the best so far, and
        return the figures to report (the selected epoch's, this epoch's as raw_<name>)."""
        metric, direction = selection.selection_metric(self.config.selection.protocol)
        value = float(evaluated[metric])
        if selection.better(value, self.selected["value"] if self.selected else None, direction):
            model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.selected = {
                "epoch": self.epoch + 1,
                "value": value,
                "metrics": dict(evaluated),
                "model": model,
            }
        if self.selected is None:  # no finite value yet: this epoch's figures, nothing selected
            return {**evaluated, selection.SELECTED_EPOCH: self.epoch + 1}
        raw = {selection.RAW_PREFIX + k: v for k, v in evaluated.items()}
        return {**raw, **self.selected["metrics"], selection.SELECTED_EPOCH: self.selected["epoch"]}

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def run_epoch(self, progress: Callable[[int], None] | None = None) -> Metrics:
        start = self._sync()
        metrics: Metrics = {"epoch": self.epoch + 1, **self.train_epoch(progress)}
        metrics[DEVICE_KEY] = self.device_name
        for fold in self.folds.values():  # lodo: each fold model's epoch too
            fold.train_epoch(progress)
        trained = self._sync()
        reported, scores = {}, {}
        for name, images in self.data.targets.items():
            reported[name], scores[name] = self.evaluate_target(images)
        val = (
            reported
            if self.data.val is self.data.targets
            else {
                name: (self.selector(name).evaluate(images), len(images))
                for name, images in self.data.val.items()
            }
        )
        evaluated = self._sync()
        figures = {**selection.epoch_metrics(reported, val), **selection.score_metrics(scores)}
        if self.config.selection.epoch == "best":
            figures = self._select(figures)
        metrics.update(figures)
        metrics.update(self.data.constants)
        metrics["time_train"] = trained - start
        metrics["time_eval"] = evaluated - trained
        # Loading (and on a cold cache, decoding) counts once, in this process's first epoch.
        metrics["time_data"] = 0.0 if self._data_reported else self.data.load_seconds
        self._data_reported = True
        self.epoch += 1
        self.history.append(metrics)
        # Compute spent on the trial so far, across processes: the cost axis of reports.
        metrics["time_total"] = sum(m["time_train"] + m["time_eval"] + m["time_data"] for m in self.history)
        return metrics


def run_trial(
    config: TrialConfig,
    runtime: Runtime | None = None,
    report: Report | None = None,
    resume: dict[str, Any] | None = None,
    progress: bool = False,
) -> TrialResult:
    """Train and evaluate one configuration; `report(metrics, state)` after every epoch."""
    trial = Trial(config, runtime or Runtime(), progress=progress)
    if resume is not None:
        trial.load(resume)
    bar = None
    for epoch in range(trial.epoch, config.train.epochs):
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=trial.images_per_epoch,
                unit="img",
                leave=True,
                desc=f"epoch {epoch + 1}/{config.train.epochs}",
            )
        metrics = trial.run_epoch(bar.update if bar else None)
        if bar:
            bar.set_postfix(
                loss=f"{metrics['train_loss']:.3f}",
                val=f"{metrics[selection.VAL_ACC]:.2f}",
                target=f"{metrics[selection.TARGET_ACC]:.2f}",
            )
            bar.close()
        if report:
            report(metrics, trial.state())
    return TrialResult(config, trial.history)


def _same_config(saved: Any, config: TrialConfig) -> bool:
    """A checkpoint's configuration read as today's (settings added since take their defaults)."""
    try:
        return TrialConfig.model_validate(saved) == config
    except ValidationError:
        return False


def _few(names: Any, shown: int = 4) -> str:
    names = list(names)
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically, so a kill or a full disk mid-write leaves the previous checkpoint intact
    (and no half-written copy beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise AshaTuneError(f"cannot read checkpoint {path}: {first_line(err)}") from None
