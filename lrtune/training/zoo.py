"""Built-in tasks closer to what users tune: a transformer LM and a fine-tuning run.

The small MLPs of :mod:`lrtune.training.tasks` cost ~0.1 s a trial and their whole LR space is easy.
These cost 1-3 s a trial on one CPU thread and behave like real work:

- ``charlm``: a causal transformer character language model on Python's own documentation
  text (``pydoc_data.topics``, part of the standard library), trained with AdamW; warmup
  schedules matter here.
- ``finetune``: an MLP body pretrained inside the task (once per process) as a denoising
  autoencoder on unlabelled digit images, a fresh head, and 50 labelled rows of digits
  5-9, trained with Adam; too high an LR destroys what pretraining learnt.

Both run offline. Their data split is fixed; the seed sets only the trained weights.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from lrtune.training.tasks import Task, bundled_dataset

#: Characters per training window (the model's context) of ``charlm``.
CONTEXT = 32
#: ``charlm``'s vocabulary: newline plus printable ASCII; anything else reads as ``?``.
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))


@functools.lru_cache(maxsize=1)
def _char_windows(
    n_train: int = 1280, n_val: int = 256
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    # pydoc_data ships with CPython (it backs help("topics")), so the text is there offline
    # and on every install; its wording changes a little between Python versions, so the
    # figures of one version are comparable among themselves. Windows are drawn at fixed
    # random offsets across the whole text so train and val cover the same topics.
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    # A byte lookup table instead of a dict per character: 465k characters in ms, not 1 s.
    lut = np.full(256, VOCAB.index("?"), dtype=np.int64)
    for i, ch in enumerate(VOCAB):
        lut[ord(ch)] = i
    raw = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)
    ids = lut[raw]
    n_windows = len(ids) // (CONTEXT + 1)
    chosen = np.random.default_rng(0).permutation(n_windows)[: n_train + n_val]
    windows = np.stack([ids[i * (CONTEXT + 1) : (i + 1) * (CONTEXT + 1)] for i in chosen])
    data = torch.from_numpy(windows)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


class _Block(nn.Module):
    """Pre-norm causal self-attention + MLP block."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, t, d = h.shape
        qkv = self.qkv(self.norm1(h)).view(n, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(att.transpose(1, 2).reshape(n, t, d))
        return h + self.mlp(self.norm2(h))


class CharTransformer(nn.Module):
    """A causal pre-norm transformer over character ids: (N, T) ids -> (N, T, vocab) logits.

    Written with ``scaled_dot_product_attention`` rather than ``nn.TransformerEncoder``:
    on one CPU thread it is about 1.5x faster at this size, which buys more steps a trial.
    """

    def __init__(
        self, vocab: int, d_model: int = 32, heads: int = 4, layers: int = 2, context: int = CONTEXT
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(context, d_model) * 0.02)
        self.blocks = nn.Sequential(*(_Block(d_model, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids) + self.pos[: ids.shape[1]]
        return self.head(self.norm(self.blocks(h)))


def char_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per character of (N, T, V) logits against (N, T) target ids."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def charlm(seed: int) -> Task:
    """Character LM on Python's docs: 2-layer causal transformer (d_model 32, 4 heads),
    context 32, AdamW; metric: validation cross-entropy per character (nats)."""
    train, val = _char_windows()
    torch.manual_seed(seed)
    return Task(
        model=CharTransformer(len(VOCAB)),
        train=train,
        val=val,
        loss_fn=char_loss,
        batch_size=16,
        epochs=4,
        name="charlm",
        optimizer="adamw",
    )


#: Labelled target rows ``finetune`` trains on (10 per class on average).
FINETUNE_ROWS = 50


def _body() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())


@functools.lru_cache(maxsize=1)
def _pretrained_body() -> dict[str, torch.Tensor]:
    # Self-supervised pretraining, as with unlabelled in-domain data: a denoising
    # autoencoder on every training image (no labels). Tried first and dropped: a classifier
    # on digits 0-4 (its features did not beat a body from scratch on 5-9, nor did an
    # autoencoder on 0-4's images only). Cached so a worker pretrains once, not once per
    # trial; trials copy these weights, never write them.
    (x, _), _ = bundled_dataset("digits")
    with torch.random.fork_rng(devices=[]):  # pretraining must not shift the trial's seed
        torch.manual_seed(1234)
        body = _body()
        model = nn.Sequential(body, nn.Linear(64, 64))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(1234)
        for _ in range(30):
            for idx in torch.randperm(len(x), generator=gen).split(64):
                clean = x[idx]
                noisy = clean + 0.5 * torch.randn(clean.shape, generator=gen)
                opt.zero_grad(set_to_none=True)
                nn.functional.mse_loss(model(noisy), clean).backward()
                opt.step()
    return {k: v.detach().clone() for k, v in body.state_dict().items()}


@functools.lru_cache(maxsize=1)
def _target_split() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    (x_tr, y_tr), (x_va, y_va) = bundled_dataset("digits")
    tr, va = y_tr >= 5, y_va >= 5
    # A fixed draw of the few labelled rows: the same for every seed and trial.
    pick = torch.randperm(int(tr.sum()), generator=torch.Generator().manual_seed(0))
    pick = pick[:FINETUNE_ROWS]
    return (x_tr[tr][pick], y_tr[tr][pick] - 5), (x_va[va], y_va[va] - 5)


def finetune(seed: int) -> Task:
    """Fine-tuning: an MLP body (64-128-64) pretrained as a denoising autoencoder on the
    training images, a new 5-way head, 50 labelled rows of digits 5-9, Adam; metric:
    validation loss on all of 5-9's validation rows."""
    train, val = _target_split()
    body = _body()
    body.load_state_dict(_pretrained_body())
    torch.manual_seed(seed)
    model = nn.Sequential(body, nn.Linear(64, 5))
    return Task(
        model=model,
        train=train,
        val=val,
        loss_fn=nn.CrossEntropyLoss(),
        batch_size=16,
        epochs=30,
        name="finetune",
        optimizer="adam",
    )
