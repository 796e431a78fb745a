"""A Hugging Face task for lrtune: a 2-layer GPT-2 built from a config (no download) as a
byte-level language model on Python's own documentation text (``pydoc_data.topics``).

    lrtune rangetest --task studies/hf_tiny.py:make --seeds 1
    lrtune study --task studies/hf_tiny.py:make --samplers tpe --trials 4

Replace ``model_init``, the datasets and the arguments with yours: that is all an
``hf_task`` needs.
"""

from __future__ import annotations

import functools

import torch
from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

from lrtune import Task
from lrtune.hf import hf_task

CONTEXT = 32


def model_init() -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=256,
        n_positions=CONTEXT,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def _windows(count: int, offset: int) -> list[dict[str, torch.Tensor]]:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics)).encode("ascii", errors="replace")
    data = torch.tensor(list(text[offset : offset + count * CONTEXT]), dtype=torch.long)
    rows = data.view(count, CONTEXT)
    # GPT-2 shifts the labels itself: labels are the inputs.
    return [{"input_ids": row, "labels": row} for row in rows]


@functools.cache
def _factory():  # built once per process: the datasets are small and fixed
    args = TrainingArguments(
        output_dir="hf-tiny-out",  # trials write nothing there (lrtune uses a temp folder)
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        num_train_epochs=2,
        eval_strategy="epoch",
    )
    return hf_task(
        model_init,
        _windows(256, 0),
        _windows(64, 200_000),
        args=args,
        metric="eval_loss",
        name="hf-tiny",
    )


def make(seed: int) -> Task:
    return _factory()(seed)
