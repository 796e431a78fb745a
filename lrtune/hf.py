"""Hugging Face adapter: a ``transformers.Trainer`` set-up becomes a task.

:func:`hf_task` returns a task factory whose task has ``model`` (``model_init()``),
``train`` (a ``DataLoader`` over the training set with the collator) and ``step_loss`` (the
model's own loss on a batch, ``model(**batch).loss``) for the range test, and ``fit(hp,
report)`` for trials: it runs ``Trainer.train()`` with lrtune's optimizer, parameter groups
(Trainer's own split: no weight decay on biases and norms) and exact closed-form schedule in
place of Trainer's, and reports the eval metric at each evaluation (pruning, Ctrl-C).

Needs the extra ``lrtune[hf]`` (transformers 5). Trainer's own ``hyperparameter_search``
cannot take an optimizer built outside it together with ``model_init``; Trainer's documented
way, overriding ``create_optimizer`` and ``create_scheduler`` in a subclass, is what this
does (:func:`_trainer_class`).

Example:
    ```python
    import torch
    from transformers import TrainingArguments

    import lrtune

    class Regressor(torch.nn.Module):  # any model Trainer takes: inputs + labels -> loss
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def forward(self, x, labels):
            return {"loss": torch.nn.functional.mse_loss(self.net(x), labels)}

    rows = [{"x": torch.randn(4), "labels": torch.randn(1)} for _ in range(64)]
    args = TrainingArguments(
        output_dir="hf-out", per_device_train_batch_size=16, num_train_epochs=2,
        report_to=[],
    )
    make = lrtune.hf_task(Regressor, rows, rows[:32], args=args, metric="eval_loss")
    # One trial by hand: what a study's trial passes to the task's fit.
    hp = lrtune.TrialParams(
        optimizer={"name": "adamw", "lr": 1e-2}, schedule={"name": "warmup_cosine"}, epochs=2
    )
    epochs = []
    value = make(0).fit(hp, lambda value, epoch: epochs.append(epoch))
    assert epochs == [0, 1] and value == value  # eval_loss reported after each epoch
    ```
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from lrtune import interrupt
from lrtune.errors import UserError
from lrtune.training.tasks import Task, TaskFactory

try:
    import transformers
    from transformers import Trainer, TrainerCallback, TrainingArguments
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    raise ImportError("lrtune.hf needs transformers: pip install 'lrtune[hf]'") from exc

__all__ = ["hf_step_loss", "hf_task"]

Report = Callable[[float, int], None]

# TrainingArguments that lrtune sets in every trial: Trainer would build its own optimizer
# and schedule from them, which lrtune's replace.
_OWNED = ("learning_rate", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "max_steps")


def hf_step_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """The model's own loss on one batch: ``model(**batch).loss`` (labels in the batch)."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"a batch is {type(batch).__name__}, expected a dict of tensors")
    out = model(**batch)
    loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
    if not isinstance(loss, torch.Tensor):
        raise TypeError(
            f"{type(model).__name__} returned no loss: put the labels in the batch ('labels')"
        )
    return loss


def _check_args(
    args: TrainingArguments,
    eval_dataset: Any,
    metric: str,
    direction: str,
    compute_metrics: Callable[[Any], dict[str, float]] | None,
) -> None:
    if not isinstance(args, TrainingArguments):
        raise UserError(f"hf_task: args is {type(args).__name__}, expected TrainingArguments")
    if eval_dataset is None:
        raise UserError(
            "hf_task: eval_dataset is missing: trials report the eval metric, give "
            "hf_task(..., eval_dataset=...)"
        )
    defaults = TrainingArguments(output_dir=args.output_dir)
    for name in _OWNED:  # warmup_ratio is gone in transformers 5 (warmup_steps < 1 is one)
        if getattr(args, name, None) != getattr(defaults, name, None):
            raise UserError(
                f"hf_task: args.{name} is set ({getattr(args, name)!r}): lrtune sets the "
                "learning rate and its schedule in every trial; leave it at its default"
            )
    if not metric:
        raise UserError("hf_task: metric must name a key of Trainer.evaluate()'s result")
    if direction not in ("minimize", "maximize"):
        raise UserError(f"hf_task: direction is {direction!r}, expected 'minimize' or 'maximize'")
    if compute_metrics is None and _metric_key(metric) != "eval_loss":
        raise UserError(
            f"hf_task: metric {metric!r}: without compute_metrics the evaluation gives "
            "eval_loss only; pass compute_metrics= that returns it, or metric='eval_loss'"
        )


def _metric_key(metric: str) -> str:
    # Trainer prefixes what compute_metrics returns (and the loss) with "eval_".
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def hf_task(
    model_init: Callable[[], nn.Module],
    train_dataset: Any,
    eval_dataset: Any = None,
    *,
    args: TrainingArguments,
    metric: str = "eval_loss",
    direction: Literal["minimize", "maximize"] = "minimize",
    data_collator: Callable[[list[Any]], Any] | None = None,
    compute_metrics: Callable[[Any], dict[str, float]] | None = None,
    callbacks: list[Any] | None = None,
    name: str = "hf",
) -> TaskFactory:
    """A task factory for ``transformers.Trainer``: ``make = hf_task(model_init, train,
    eval, args=TrainingArguments(...), metric="eval_loss")``.

    Args:
        model_init: builds a fresh, untrained (or freshly loaded) model; called with torch
            seeded by the trial's seed.
        train_dataset: what ``Trainer`` takes; examples hold the inputs and ``labels``.
        eval_dataset: the same for evaluation (required: trials report its metric).
        args: ``TrainingArguments`` without ``learning_rate``, ``lr_scheduler_type``,
            ``warmup_*`` or ``max_steps`` (lrtune's); its ``num_train_epochs`` is the default
            epochs, ``per_device_train_batch_size`` the batch size. Evaluation runs at least
            every epoch (``eval_strategy="epoch"`` unless it says ``steps``).
        metric: the key of ``Trainer.evaluate()``'s result that trials report (``eval_``
            may be left out: ``"accuracy"`` is ``eval_accuracy``).
        direction: ``"minimize"`` or ``"maximize"`` the metric.
        data_collator: passed to ``Trainer`` (default: its ``default_data_collator``).
        compute_metrics: passed to ``Trainer``.
        callbacks: passed to ``Trainer``.
        name: the task's name (the default study group).

    Raises :class:`UserError` for a missing ``eval_dataset``, an LR or schedule in ``args``
    and (in a trial) a metric the evaluation lacks. Example: :mod:`lrtune.hf`'s docstring.
    """
    _check_args(args, eval_dataset, metric, direction, compute_metrics)
    key = _metric_key(metric)
    collate = data_collator or transformers.default_data_collator
    batch_size = int(args.per_device_train_batch_size) * int(args.gradient_accumulation_steps)

    trainer_kwargs = {
        "model_init": model_init,
        "train_dataset": train_dataset,
        "eval_dataset": eval_dataset,
        "data_collator": collate,
        "compute_metrics": compute_metrics,
    }

    def fit(hp: Any, report: Report) -> float:
        return _fit(hp, report, args, key, trainer_kwargs, callbacks or [])

    def make(seed: int) -> Task:
        torch.manual_seed(seed)  # the seed sets the initial weights, as for every task
        loader = DataLoader(
            train_dataset,
            batch_size=int(args.per_device_train_batch_size),
            shuffle=True,
            collate_fn=collate,
        )
        return Task(
            model=model_init(),
            train=loader,
            val=None,
            loss_fn=_no_loss_fn,
            metric_name=key,
            direction=direction,
            batch_size=batch_size,
            epochs=max(1, round(float(args.num_train_epochs))),
            name=name,
            step_loss=hf_step_loss,
            fit=fit,
            accumulate=int(args.gradient_accumulation_steps),
            optimizer="adamw",  # Trainer's own default
            # What Trainer does in the trials, so the range test and the export agree.
            clip_grad_norm=float(args.max_grad_norm) if args.max_grad_norm else None,
            precision="bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        )

    return make


def _fit(
    hp: Any,
    report: Report,
    args: TrainingArguments,
    key: str,
    trainer_kwargs: dict[str, Any],
    callbacks: list[Any],
) -> float:
    """One trial: ``Trainer.train()`` with ``hp``'s optimizer and schedule, ``key`` reported
    after each evaluation; the last value."""
    transformers.set_seed(hp.seed)
    with tempfile.TemporaryDirectory(prefix="lrtune-hf-") as out, _quiet():
        trial_args = _trial_args(args, hp, out)
        reporter = _Reporter(key, report)
        trainer = _trainer_class(hp)(
            args=trial_args, callbacks=[*callbacks, reporter], **trainer_kwargs
        )
        trainer.remove_callback(transformers.PrinterCallback)  # disable_tqdm's printer
        trainer.train()
        if reporter.last is None:  # no evaluation ran (an eval_strategy of "no")
            reporter.on_evaluate(trial_args, trainer.state, None, trainer.evaluate())
        assert reporter.last is not None
        return reporter.last


def _no_loss_fn(*args: Any) -> torch.Tensor:
    raise TypeError("a Hugging Face task's loss is the model's own: use task.step_loss")


def _trial_args(args: TrainingArguments, hp: Any, out: str) -> TrainingArguments:
    """The user's arguments with the trial's epochs, seed and device; no checkpoints, no
    reporting to other trackers, evaluation at least every epoch."""
    strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
    return dataclasses.replace(
        args,
        output_dir=out,
        num_train_epochs=hp.epochs,
        seed=hp.seed,
        data_seed=hp.seed,
        use_cpu=hp.device.type == "cpu",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        eval_strategy=strategy if strategy == "steps" else "epoch",
    )


def _trainer_class(hp: Any) -> type[Trainer]:
    """A ``Trainer`` whose optimizer and schedule are ``hp``'s (the documented override)."""

    class LrtuneTrainer(Trainer):
        def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
            if self.optimizer is None:
                module: nn.Module = self.model if model is None else model  # type: ignore[assignment]
                decay = set(self.get_decay_parameter_names(module))
                named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
                groups: list[dict[str, Any]] = [
                    {"params": [p for n, p in named if n in decay]},
                    {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
                ]
                self.optimizer = hp.build_optimizer([g for g in groups if g["params"]])
            return self.optimizer

        def create_scheduler(
            self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
        ) -> Any:
            if self.lr_scheduler is None:
                optimizer = self.optimizer if optimizer is None else optimizer
                self.lr_scheduler = hp.build_scheduler(optimizer, num_training_steps)
            return self.lr_scheduler

    return LrtuneTrainer


class _Reporter(TrainerCallback):
    """Reports ``key`` after each evaluation (pruning raises from there); stops at the next
    step on lrtune's deferred Ctrl-C."""

    def __init__(self, key: str, report: Report) -> None:
        self.key, self.report = key, report
        self.count = 0
        self.last: float | None = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        interrupt.check()  # a deferred Ctrl-C stops here (lrtune.interrupt)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **_: Any
    ) -> None:
        metrics = metrics or {}
        if self.key not in metrics:
            produced = ", ".join(sorted(k for k in metrics if k.startswith("eval_"))) or "none"
            raise UserError(
                f"hf_task: the evaluation gives no {self.key!r} (it gives: {produced}); pass "
                "metric= one of those, or a compute_metrics that returns it"
            )
        self.last = float(metrics[self.key])
        self.report(self.last, self.count)
        self.count += 1


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Trainer's info logs (its banner, each epoch's log lines) stay out of lrtune's output."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
