"""The bad-input sweep: every command given bad flags, spec files, tasks and storages.

Each case runs the CLI in-process and checks the contract of SPEC for a mistake the user
can fix: exit code 2, exactly one line on stderr starting ``lrtune <command>: error:``
(``lrtune: error:`` before a command is known), no traceback, no file left in the working
directory and the storage given (a real SQLite group made by ``lrtune study``) byte for
byte unchanged, and no password shown. ``study``'s bad spec files and flags that
tests/test_spec.py already tries are not repeated here. ``python tests/test_bad_inputs.py``
runs the sweep alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_sqlite

from lrtune.cli import main

GROUP = "bad"
FOREIGN = "--storage sqlite:///{dir}/foreign.db"
STUDY = f"{GROUP}.random.none"

# {dir} in a case's argv is a folder holding the files below (specs, tasks, a regular file
# `afile`) and `foreign.db`, an SQLite database that is not an Optuna storage. A case with
# storage=True gets `--storage URL` of the group made by the `world` fixture.
FILES: dict[str, bytes] = {
    "binary.toml": bytes(range(256)) * 4,
    "schedules-int.toml": b"schedules = 3\n",
    "lr-nan.toml": b"lr_low = nan\n",
    "params-unknown.toml": b'schedules = ["cosine"]\n[params.cosine]\nwobble = [1, 2]\n',
    "params-range-mixed.toml": b'[params.onecycle]\npct_start = [0.1, "x"]\n',
    "widen-string.toml": b'widen = "yes"\n',
    "seed-negative.toml": b"seed = -1\n",
    "seed-huge.toml": b"seed = 1099511627776\n",
    "adam-momentum.toml": b'[optimizer]\nname = "adam"\nmomentum = 0.9\n',
    "import_error.py": b'raise ImportError("no module named torchvision_nightly")\n',
    "syntax_error.py": b"def make(seed):\n    return (\n",
    "sibling_missing.py": b"from lrtune_sibling_nowhere import build\n",
    "no_factory.py": b"x = 1\n",
    "factory_raises.py": b'def make(seed):\n    raise RuntimeError("dataset not found")\n',
    "factory_wrong_type.py": b"def make(seed):\n    return 42\n",
    "exits.py": b"import sys\nsys.exit(3)\n",
    "loss_raises.py": b"import torch\nfrom torch import nn\nfrom lrtune import Task\n\n"
    b"def make(seed):\n"
    b"    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))\n"
    b"    return Task(nn.Linear(4, 3), (x, y), (x, y), nn.functional.mse_loss, batch_size=16)\n",
    "newline_name.py": b"import torch\nfrom torch import nn\nfrom lrtune import Task\n\n"
    b"def make(seed):\n"
    b"    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))\n"
    b"    return Task(nn.Linear(4, 2), (x, y), (x, y), nn.functional.cross_entropy,\n"
    b"                name='a\\nb')\n",
    "deep.toml": b"x = " + b"[" * 3000 + b"]" * 3000 + b"\n",
    "stored-log-zero.toml": b'[params.cosine]\nfinal_factor = ["float", 0.0, 0.5, true]\n',
    "merge-key.yaml": b"base: &b\n  lr: 1\ntrain:\n  <<: *b\n  epochs: 3\n",
    "deep.json": b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}\n",
    # 600 levels: past the recursion limit all the same (ruamel takes several frames a level),
    # and ruamel's scanner is quadratic in the depth (5000 levels: ~25 s a load).
    "deep.yaml": b"a: " + b"[" * 600 + b"]" * 600 + b"\n",
    "deep-into.toml": b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "readonly.yaml": b"train:\n  epochs: 3\n",  # mode 0o444, see _write_files
    "readonly.json": b"{}\n",  # mode 0o444
    "afile": b"not a directory\n",
    "rungs-float.toml": b"rungs = [1, 2.5, 9]\nepochs = 9\n",
    "beta-string.toml": b'rungs = [1, 3, 9]\nepochs = 9\nhorizon_beta = "0.5"\n',
    "share-string.toml": b'rungs = [1, 3, 9]\nepochs = 9\nshare_trunks = "yes"\n',
    "rungs-grid.toml": b'rungs = [1, 3, 9]\nepochs = 9\nsamplers = ["grid", "tpe"]\n',
    "eta-float.toml": b"reduction_factor = 2.5\n",
    # The user's setup (issue 19): parameter groups, batch size, the task's own dimensions.
    "groups_task.py": b"import torch\nfrom torch import nn\nfrom lrtune import Task\n\n"
    b"def make(seed, dropout=0.0):\n"
    b"    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))\n"
    b"    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(dropout), nn.Linear(8, 2))\n"
    b"    return Task(model, (x, y), (x, y), nn.functional.cross_entropy, batch_size=16,\n"
    b"        param_groups=lambda m: [{'params': m[0].parameters(), 'name': 'body'},\n"
    b"                                {'params': m[2].parameters(), 'name': 'head'}])\n",
    "groups_twice.py": b"import torch\nfrom torch import nn\nfrom lrtune import Task\n\n"
    b"def make(seed):\n"
    b"    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))\n"
    b"    return Task(nn.Linear(4, 2), (x, y), (x, y), nn.functional.cross_entropy,\n"
    b"        param_groups=lambda m: [{'params': m.parameters(), 'name': 'a'},\n"
    b"                                {'params': [m.weight], 'name': 'b'}])\n",
    "groups_nan.py": b"import torch\nfrom torch import nn\nfrom lrtune import Task\n\n"
    b"def make(seed):\n"
    b"    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))\n"
    b"    return Task(nn.Linear(4, 2), (x, y), (x, y), nn.functional.cross_entropy,\n"
    b"        param_groups=lambda m: [{'params': m.parameters(), 'lr_mult': float('nan')}])\n",
    "lr-mult-zero.toml": b"[params.lr_mult]\nhead = [0, 10]\n",
    "lr-mult-nan.toml": b"[params.lr_mult]\nhead = [nan, 10]\n",
    "lr-mult-nosuch.toml": b"[params.lr_mult]\nneck = [1, 10]\n",
    "batch-zero.toml": b"[params]\nbatch_size = [0, 64]\n",
    "batch-negative.toml": b"[params]\nbatch_size = [-64, -8]\n",
    "task-key.toml": b"[params.task]\nwidth = [8, 64]\n",
}


@dataclass(frozen=True)
class Case:
    """A bad invocation and a word its error line must contain."""

    argv: tuple[str, ...]
    mention: str
    storage: bool = True  # append --storage {db} (and check it is left unchanged)


def _c(argv: str, mention: str, *, storage: bool = True) -> Case:
    return Case(tuple(argv.split()), mention, storage)


def _no_mps(argv: str) -> Any:
    """``--device mps`` where torch has no mps: a bad input only on such a machine."""
    from lrtune.device import mps_available

    skip = pytest.mark.skipif(mps_available(), reason="this machine has mps")
    return pytest.param(_c(argv, "no Apple GPU"), marks=skip)


# command -> {case id: Case}
CASES: dict[str, dict[str, Any]] = {
    "lrtune": {
        "unknown command": _c("bogus", "unknown command", storage=False),
        "unknown top flag": _c("--frob", "--frob", storage=False),
    },
    "rangetest": {
        "seeds 0": _c("rangetest --seeds 0", "--seeds"),
        "seeds x": _c("rangetest --seeds x", "--seeds"),
        "start-lr -1": _c("rangetest --start-lr -1", "--start-lr"),
        "start-lr nan": _c("rangetest --start-lr nan", "--start-lr"),
        "end-lr 0": _c("rangetest --end-lr 0", "--end-lr"),
        "end-lr inf": _c("rangetest --end-lr inf", "--end-lr"),
        "end-lr below start": _c("rangetest --start-lr 0.1 --end-lr 0.01", "end_lr"),
        "steps 3": _c("rangetest --steps 3", "steps"),
        "mode foo": _c("rangetest --mode foo", "--mode"),
        "optimizer bogus": _c("rangetest --optimizer bogus", "bogus"),
        "task empty": Case(("rangetest", "--task", ""), "--task"),
        "nproc-per-trial 0": _c("rangetest --nproc-per-trial 0", "--nproc-per-trial"),
        "threads 1e9": _c("rangetest --threads 1000000000", "--threads"),
        "seed x": _c("rangetest --seed x", "--seed"),
        "seed -1": _c("rangetest --seed -1", "--seed"),
        "seed 2**70": _c(f"rangetest --seed {2**70}", "--seed"),
        "unknown flag": _c("rangetest --frob", "--frob"),
        "stray argument": _c("rangetest digits", "digits"),
        "task nope": _c("rangetest --task nope", "nope"),
        "task missing file": _c("rangetest --task missing.py:make", "does not exist"),
        "task import error": _c("rangetest --task {dir}/import_error.py:make", "ImportError"),
        "task syntax error": _c("rangetest --task {dir}/syntax_error.py:make", "SyntaxError"),
        "task sibling import fails": _c(
            "rangetest --task {dir}/sibling_missing.py:make", "put lrtune_sibling_nowhere.py"
        ),
        "task no factory": _c("rangetest --task {dir}/no_factory.py:make", "no function"),
        "task module missing": _c("rangetest --task no_such_module_xyz:make", "no_such"),
        "task factory raises": _c("rangetest --task {dir}/factory_raises.py:make", "dataset"),
        "task factory wrong type": _c("rangetest --task {dir}/factory_wrong_type.py:make", "Task"),
        "task exits": _c("rangetest --task {dir}/exits.py:make", "exit"),
        "device tpu": _c("rangetest --device tpu", "tpu"),
        "device mps:0": _c("rangetest --device mps:0", "mps:0"),
        "device mps, none here": _no_mps("rangetest --device mps"),
        "json missing dir": _c("rangetest --json no/such/dir/r.json", "does not exist"),
        "json under a file": _c("rangetest --json {dir}/afile/r.json", "afile"),
        "json under /proc": _c("rangetest --json /proc/r.json", "/proc"),
        "json a folder": _c("rangetest --json {dir}/folder.json", "it is a folder"),
        "json read-only": _c("rangetest --json {dir}/readonly.json", "read-only"),
        "plot a folder": _c("rangetest --plot {dir}/folder.png", "it is a folder"),
        "plot not png": _c("rangetest --plot r.jpg", ".png"),
        "log-dir under a file": _c("rangetest --log-dir {dir}/afile/tb", "--log-dir"),
        "log-dir a file": _c("rangetest --log-dir {dir}/afile", "not a directory"),
        "plot under /proc": _c("rangetest --plot /proc/r.png", "/proc"),
        "study, no storage": _c("rangetest --study nope", "no storage at lrtune.db", storage=False),
        "study nope": _c(f"rangetest --study nope{STUDY}", "no study"),
        "study, storage scheme": _c("rangetest --study x --storage foo://x", "foo", storage=False),
        "study, storage port": _c(
            "rangetest --study x --storage postgresql://u@h:abc/db", "port", storage=False
        ),
        "study, storage no database": _c(
            "rangetest --study x --storage postgresql://u@127.0.0.1:1", "no database", storage=False
        ),
        "task loss raises": _c(
            "rangetest --seeds 1 --steps 20 --task {dir}/loss_raises.py:make", "size"
        ),
        "param in two groups": _c("rangetest --task {dir}/groups_twice.py:make", "in group 'b'"),
        "group lr_mult nan": _c("rangetest --task {dir}/groups_nan.py:make", "lr_mult"),
    },
    "study": {
        "spec binary": _c("study --spec {dir}/binary.toml", "not a text file"),
        "spec directory": _c("study --spec {dir}", "not a regular file"),
        "spec schedules int": _c("study --spec {dir}/schedules-int.toml", "schedules"),
        "spec lr nan": _c("study --spec {dir}/lr-nan.toml", "lr_low"),
        "spec params mixed": _c("study --spec {dir}/params-range-mixed.toml", "pct_start"),
        "spec widen string": _c("study --spec {dir}/widen-string.toml", "widen"),
        "spec seed negative": _c("study --spec {dir}/seed-negative.toml", "seed"),
        "spec seed 2**40": _c("study --spec {dir}/seed-huge.toml", "seed"),
        "seed 2**40": _c(f"study --seed {2**40}", "--seed"),
        "trials 1.5": _c("study --trials 1.5", "--trials"),
        "repeats x": _c("study --repeats x", "--repeats"),
        "samplers twice": _c("study --samplers tpe,tpe", "twice"),
        "optimizer foo": _c("study --optimizer foo", "foo"),
        "baseline foo": _c("study --baseline foo", "foo"),
        "baseline twice": _c("study --baseline schedulefree,schedulefree", "twice"),
        "lr-low 0": _c("study --lr-low 0", "--lr-low"),
        "group slash": _c("study --group a/b", "--group"),
        "precision fp16 on cpu": _c(
            "study --group fresh16 --prior none --samplers random --precision fp16 --device cpu",
            "fp16",
        ),
        "grid-points 1e8": _c("study --grid-points 100000000", "--grid-points"),
        "repeats 1e6": _c("study --repeats 1000000", "--repeats"),
        "heartbeat 1e11": _c("study --heartbeat-interval 100000000000", "--heartbeat-interval"),
        "grace below heartbeat": _c(
            "study --heartbeat-interval 10 --grace-period 5", "--grace-period"
        ),
        "threads 1e9": _c("study --threads 1000000000", "--threads"),
        "workers 1e5": _c("study --workers 100000", "--workers"),
        "checkpoint-every -1": _c("study --checkpoint-every -1", "--checkpoint-every"),
        "checkpoint-every x": _c("study --checkpoint-every x", "--checkpoint-every"),
        "grace 0": _c("study --grace 0", "--grace"),
        "create-only with workers": _c("study --create-only --workers 2", "--create-only"),
        "spec 3000 deep": _c("study --spec {dir}/deep.toml", "nested"),
        "spec stored log range from 0": _c(
            "study --spec {dir}/stored-log-zero.toml --schedules cosine", "low > 0"
        ),
        "storage no database": _c(
            "study --storage postgresql://u@127.0.0.1:1", "no database", storage=False
        ),
        "group newline": Case(("study", "--group", "a\nb"), "U+000A"),
        "group escape": Case(("study", "--group", "a\x1b[31mb"), "U+001B"),
        "group tab": Case(("study", "--group", "a\tb"), "U+0009"),
        "task name newline": _c(
            "study --prior none --task {dir}/newline_name.py:make", "U+000A", storage=False
        ),
        "grid-points 1": _c("study --grid-points 1", "--grid-points"),
        "epochs 0": _c("study --epochs 0", "--epochs"),
        "workers 0": _c("study --workers 0", "--workers"),
        "log-dir under a file": _c("study --prior none --log-dir {dir}/afile/tb", "--log-dir"),
        "log-dir under /proc": _c("study --prior none --log-dir /proc/lrtune-tb", "--log-dir"),
        "device mps, none here": _no_mps("study --device mps --prior none"),
        "heartbeat 0": _c("study --heartbeat-interval 0", "--heartbeat-interval"),
        "no-widen value": _c("study --widen=yes", "--widen"),
        "task import error": _c("study --task {dir}/import_error.py:make", "ImportError"),
        "task syntax error": _c("study --task {dir}/syntax_error.py:make", "SyntaxError"),
        "task sibling import fails": _c(
            "study --task {dir}/sibling_missing.py:make", "put lrtune_sibling_nowhere.py"
        ),
        "task factory raises": _c("study --task {dir}/factory_raises.py:make", "dataset"),
        "changed spec": _c(
            f"study --group {GROUP} --prior none --samplers random --schedules cosine",
            "different",
        ),
        "changed accumulate": _c(
            f"study --group {GROUP} --prior none --samplers random --epochs 1 "
            "--schedules constant --pruner none --device cpu --accumulate 2",
            "different accumulate",
        ),
        "spec momentum on adam": _c("study --spec {dir}/adam-momentum.toml", "momentum"),
        "rangetest end below start": _c(
            "study --rangetest-start-lr 1 --rangetest-end-lr 0.5", "rangetest_end_lr"
        ),
        "rungs descending": _c("study --epochs 9 --rungs 3,1,9", "ascending"),
        "rungs repeated": _c("study --epochs 9 --rungs 1,3,3,9", "ascending"),
        "rungs 0": _c("study --epochs 9 --rungs 0,3,9", ">= 1"),
        "rungs non-integer": _c("study --epochs 9 --rungs 1,2.5,9", "2.5"),
        "rungs one": _c("study --epochs 9 --rungs 9", "two or more"),
        "rungs last not epochs": _c("study --epochs 10 --rungs 1,3,9", "--epochs (10)"),
        "rungs last not the task's epochs": _c(
            "study --prior none --samplers tpe --rungs 1,3,9", "--epochs (10)"
        ),
        "rungs with pruner median": _c(
            "study --epochs 9 --rungs 1,3,9 --pruner median", "--pruner median"
        ),
        "rungs with pruner hyperband": _c(
            "study --epochs 9 --rungs 1,3,9 --pruner hyperband", "--pruner hyperband"
        ),
        "rungs with grid": _c("study --epochs 9 --rungs 1,3,9 --samplers grid,tpe", "grid"),
        "reduction-factor 1": _c("study --epochs 9 --rungs 1,3,9 --reduction-factor 1", ">= 2"),
        "reduction-factor 1.5": _c(
            "study --epochs 9 --rungs 1,3,9 --reduction-factor 1.5", "--reduction-factor"
        ),
        "horizon-beta without rungs": _c("study --epochs 9 --horizon-beta 0.5", "needs --rungs"),
        "horizon-beta nan": _c("study --epochs 9 --rungs 1,3,9 --horizon-beta nan", "between"),
        "horizon-beta 3": _c("study --epochs 9 --rungs 1,3,9 --horizon-beta 3", "between"),
        "horizon-beta word": _c("study --epochs 9 --rungs 1,3,9 --horizon-beta half", "half"),
        "spec horizon_beta string": _c("study --spec {dir}/beta-string.toml", "horizon_beta"),
        "share-trunks without rungs": _c("study --epochs 9 --share-trunks", "needs --rungs"),
        "share-trunks with horizon-beta": _c(
            "study --epochs 9 --rungs 1,3,9 --share-trunks --horizon-beta 0.5", "drop one"
        ),
        "share-trunks without wsd or constant": _c(
            "study --epochs 9 --rungs 1,3,9 --share-trunks --schedules cosine,onecycle",
            "wsd and constant",
        ),
        "spec share_trunks string": _c("study --spec {dir}/share-string.toml", "share_trunks"),
        "spec rungs float": _c("study --spec {dir}/rungs-float.toml", "rungs"),
        "spec rungs with grid": _c("study --spec {dir}/rungs-grid.toml", "grid"),
        "spec reduction_factor float": _c("study --spec {dir}/eta-float.toml", "reduction_factor"),
        "storage scheme": _c("study --storage foo://x", "foo", storage=False),
        "storage port": _c("study --storage postgresql://u:pw@h:abc/db", "port", storage=False),
        "storage empty": _c(
            "study --prior none --samplers random --trials 1 --epochs 1 --schedules constant"
            " --storage=",
            "--storage",
            storage=False,
        ),
        "storage foreign sqlite": _c(
            "study --prior none --samplers random --trials 1 --epochs 1 --schedules constant"
            " --storage sqlite:///{dir}/foreign.db",
            "foreign.db",
            storage=False,
        ),
        "timeout 0": _c("study --timeout 0", "--timeout"),
        "timeout nan": _c("study --timeout nan", "--timeout"),
        "batch-scaling cubic": _c("study --batch-scaling cubic", "cubic"),
        "spec lr_mult 0": _c("study --spec {dir}/lr-mult-zero.toml", "lr_mult"),
        "spec lr_mult nan": _c("study --spec {dir}/lr-mult-nan.toml", "lr_mult"),
        "spec lr_mult, no such group": _c(
            "study --spec {dir}/lr-mult-nosuch.toml --task {dir}/groups_task.py:make",
            "no such group",
        ),
        "spec lr_mult, task without groups": _c(
            "study --spec {dir}/lr-mult-nosuch.toml", "no param_groups"
        ),
        "param in two groups": _c("study --task {dir}/groups_twice.py:make", "in group 'b'"),
        "spec batch_size 0": _c("study --spec {dir}/batch-zero.toml", "batch_size"),
        "spec batch_size negative": _c("study --spec {dir}/batch-negative.toml", "batch_size"),
        "spec task key the factory lacks": _c(
            "study --spec {dir}/task-key.toml --task {dir}/groups_task.py:make", "'width'"
        ),
        "task empty": Case(("study", "--task", ""), "--task"),
        "nproc-per-trial 0": _c("study --nproc-per-trial 0", "--nproc-per-trial"),
        "nproc-per-trial with workers": _c("study --nproc-per-trial 2 --workers 2", "--workers"),
        "lr-high 0": _c("study --lr-high 0", "--lr-high"),
        "lr-high nan": _c("study --lr-high nan", "--lr-high"),
        "lr-low above lr-high": _c("study --lr-low 1 --lr-high 0.1", "lr_high"),
        "tolerance 0": _c("study --tolerance 0", "--tolerance"),
        "tolerance nan": _c("study --tolerance nan", "--tolerance"),
        "clip-grad-norm 0": _c("study --clip-grad-norm 0", "--clip-grad-norm"),
        "clip-grad-norm inf": _c("study --clip-grad-norm inf", "--clip-grad-norm"),
        "rangetest-steps 3": _c("study --rangetest-steps 3", "--rangetest-steps"),
        "rangetest-steps x": _c("study --rangetest-steps x", "--rangetest-steps"),
        "rangetest-seeds 0": _c("study --rangetest-seeds 0", "--rangetest-seeds"),
        "confirm -1": _c("study --confirm -1", "--confirm"),
        "confirm x": _c("study --confirm x", "--confirm"),
        "confirm 1e6": _c("study --confirm 1000000", "--confirm"),
        "confirm-seeds 0": _c("study --confirm-seeds 0", "--confirm-seeds"),
        "confirm-seeds 1e6": _c("study --confirm-seeds 1000000", "--confirm-seeds"),
    },
    "worker": {
        "no group or study": _c("worker", "--group"),
        "group nosuch": _c("worker --group nosuch", "nosuch"),
        "group nosuch, 2 workers": _c("worker --group nosuch --workers 2", "nosuch"),
        "study nosuch": _c("worker --study nosuch", "nosuch"),
        "workers 0": _c("worker --group x --workers 0", "--workers"),
        "workers without group": _c(f"worker --study {STUDY} --workers 2", "--group"),
        "gpus x": _c(f"worker --group {GROUP} --gpus x", "--gpus"),
        "gpus twice": _c(f"worker --group {GROUP} --gpus 0,0", "distinct"),
        "gpus negative": _c(f"worker --group {GROUP} --gpus -1", "--gpus"),
        "device tpu": _c(f"worker --group {GROUP} --device tpu", "tpu"),
        "device mps, none here": _no_mps(f"worker --group {GROUP} --device mps"),
        "task pinned": _c(f"worker --group {GROUP} --task wine", "pinned"),
        "task pinned, 2 workers": _c(f"worker --group {GROUP} --task wine --workers 2", "pinned"),
        "task pinned, study": _c(f"worker --study {STUDY} --task mylab:make", "pinned"),
        "grace-period x": _c(f"worker --group {GROUP} --grace-period x", "--grace-period"),
        "heartbeat 1e11": _c(
            f"worker --group {GROUP} --heartbeat-interval 100000000000", "--heartbeat-interval"
        ),
        "grace below heartbeat": _c(
            f"worker --group {GROUP} --heartbeat-interval 10 --grace-period 19", "--grace-period"
        ),
        "threads 1e9": _c(f"worker --group {GROUP} --threads 1000000000", "--threads"),
        "workers 1e5": _c(f"worker --group {GROUP} --workers 100000", "--workers"),
        "grace 0": _c(f"worker --group {GROUP} --grace 0", "--grace"),
        "grace nan": _c(f"worker --group {GROUP} --grace nan", "--grace"),
        "max-time x": _c(f"worker --group {GROUP} --max-time x", "--max-time"),
        "max-time 0": _c(f"worker --group {GROUP} --max-time 0", "--max-time"),
        "max-time 25:99": _c(f"worker --group {GROUP} --max-time 1:2:3:4", "--max-time"),
        "grace not below max-time": _c(
            f"worker --group {GROUP} --max-time 60 --grace 60", "--max-time"
        ),
        "task empty": Case(("worker", "--group", GROUP, "--task", ""), "--task"),
        "nproc-per-trial 0": _c(f"worker --group {GROUP} --nproc-per-trial 0", "--nproc"),
        "grpc bad port": _c(
            f"worker --group {GROUP} --storage grpc://127.0.0.1:99999", "port", storage=False
        ),
        "grpc no proxy there": _c(
            f"worker --group {GROUP} --storage grpc://127.0.0.1:1", "lrtune proxy", storage=False
        ),
        "nproc-per-trial with workers": _c(
            f"worker --group {GROUP} --nproc-per-trial 2 --workers 2", "--workers"
        ),
        "nproc-per-trial with fewer gpus": _c(
            f"worker --group {GROUP} --nproc-per-trial 2 --gpus 0", "list 2 GPUs"
        ),
        "storage no database": _c(
            "worker --group x --storage postgresql://u@127.0.0.1:1", "no database", storage=False
        ),
        "log-dir under a file": _c(f"worker --group {GROUP} --log-dir {{dir}}/afile/t", "afile"),
        "unknown flag": _c(f"worker --group {GROUP} --frob", "--frob"),
        "timeout 0": _c(f"worker --group {GROUP} --timeout 0", "--timeout"),
        "storage missing": _c(
            "worker --group x --storage sqlite:///lrtnue.db", "no storage at", storage=False
        ),
        "storage scheme": _c("worker --group x --storage foo://x", "foo", storage=False),
        "storage port": _c(
            "worker --group x --storage postgresql://u@h:abc/db", "port", storage=False
        ),
        "storage foreign sqlite": _c("worker --group x " + FOREIGN, "foreign.db", storage=False),
        "storage no scheme, password": _c(
            "worker --group x --storage root:SECRET@127.0.0.1:1/db", "storage", storage=False
        ),
    },
    "dashboard": {
        "port 0": _c("dashboard --port 0", "--port"),
        "port x": _c("dashboard --port x", "--port"),
        "port 70000": _c("dashboard --port 70000", "--port"),
        "host not local": _c("dashboard --host 192.0.2.1 --port 18123", "cannot listen"),
        "allow-host url": _c("dashboard --allow-host http://lr.example/", "--allow-host"),
        "allow-host port": _c("dashboard --allow-host lr.example:8080", "--allow-host"),
        "allow-host empty": Case(("dashboard", "--allow-host", ""), "--allow-host"),
        "unknown flag": _c("dashboard --frob", "--frob"),
        "storage missing": _c(
            "dashboard --storage sqlite:///lrtnue.db", "no storage at", storage=False
        ),
        "storage scheme": _c("dashboard --storage foo://x", "foo", storage=False),
        "storage port": _c("dashboard --storage postgresql://u@h:abc/db", "port", storage=False),
        "storage no scheme, password": _c(
            "dashboard --storage root:SECRET@127.0.0.1:1/db", "storage", storage=False
        ),
        "storage no database": _c(
            "dashboard --storage postgresql://u@127.0.0.1:1", "no database", storage=False
        ),
    },
    "export": {
        "no study": _c("export", "--study"),
        "study nosuch": _c("export --study nosuch", "nosuch"),
        "format xml": _c(f"export --study {STUDY} --format xml", "--format"),
        "format hf into": _c(f"export --study {STUDY} --format hf --into b.yaml", "--into"),
        "out and into": _c(f"export --study {STUDY} --out a.yaml --into b.yaml", "--into"),
        "dry-run alone": _c(f"export --study {STUDY} --dry-run", "--dry-run"),
        "batch-size 0": _c(f"export --study {STUDY} --batch-size 0", "--batch-size"),
        "trial x": _c(f"export --study {STUDY} --trial x", "--trial"),
        "trial -1": _c(f"export --study {STUDY} --trial -1", "--trial"),
        "trial nosuch": _c(f"export --study {STUDY} --trial 99", "no trial 99"),
        "weights under a file": _c(
            f"export --study {STUDY} --weights {{dir}}/afile/w.pt --out c.yaml", "--weights"
        ),
        "weights a directory": _c(f"export --study {STUDY} --weights {{dir}}", "--weights"),
        "keep-checkpoints alone": _c(f"export --study {STUDY} --keep-checkpoints", "--weights"),
        "weights dry-run": _c(
            f"export --study {STUDY} --into {{dir}}/readonly.yaml --dry-run --weights w.pt",
            "--weights",
        ),
        "into missing": _c(f"export --study {STUDY} --into nosuch.yaml", "nosuch.yaml"),
        "into binary": _c(f"export --study {STUDY} --into {{dir}}/binary.toml", "binary.toml"),
        "out missing dir": _c(f"export --study {STUDY} --out no/such/c.yaml", "no/such"),
        "out under /proc": _c(f"export --study {STUDY} --out /proc/c.yaml", "/proc"),
        "into a merge key": _c(
            f"export --study {STUDY} --into {{dir}}/merge-key.yaml:train", "anchor"
        ),
        "into 5000-deep json": _c(f"export --study {STUDY} --into {{dir}}/deep.json", "nested"),
        "into 600-deep yaml": _c(f"export --study {STUDY} --into {{dir}}/deep.yaml", "YAML"),
        "into 5000-deep toml": _c(
            f"export --study {STUDY} --into {{dir}}/deep-into.toml", "nested"
        ),
        "into read-only": _c(
            f"export --study {STUDY} --into {{dir}}/readonly.yaml:train", "read-only"
        ),
        "out read-only": _c(f"export --study {STUDY} --out {{dir}}/readonly.yaml", "read-only"),
        "storage missing": _c(
            "export --study x --storage sqlite:///lrtnue.db", "no storage at", storage=False
        ),
        "storage scheme": _c("export --study x --storage foo://x", "foo", storage=False),
        "storage port": _c(
            "export --study x --storage postgresql://u@h:abc/db", "port", storage=False
        ),
        "storage foreign sqlite": _c("export --study x " + FOREIGN, "foreign.db", storage=False),
        "storage no database": _c(
            "export --study x --storage postgresql://u@127.0.0.1:1", "no database", storage=False
        ),
    },
    "report": {
        "no group": _c("report --out r", "--group"),
        "no out": _c(f"report --group {GROUP}", "--out"),
        "group nosuch": _c("report --group nosuch --out r", "nosuch"),
        "out a file": _c(f"report --group {GROUP} --out {{dir}}/afile", "not a directory"),
        "out under a file": _c(f"report --group {GROUP} --out {{dir}}/afile/r", "afile"),
        "out under /proc": _c(f"report --group {GROUP} --out /proc/lrtune-report", "/proc"),
        "out under /sys": _c(f"report --group {GROUP} --out /sys/lrtune-report", "/sys"),
        "storage missing": _c(
            "report --group x --out r --storage sqlite:///lrtnue.db", "no storage", storage=False
        ),
        "storage scheme": _c("report --group x --out r --storage foo://x", "foo", storage=False),
        "storage port": _c(
            "report --group x --out r --storage postgresql://u@h:abc/db", "port", storage=False
        ),
        "storage foreign sqlite": _c(
            "report --group x --out r " + FOREIGN, "foreign.db", storage=False
        ),
        "storage no database": _c(
            "report --group x --out r --storage postgresql://u@127.0.0.1:1/",
            "no database",
            storage=False,
        ),
    },
    "proxy": {
        "no port": _c("proxy", "--port"),
        "port 0": _c("proxy --port 0", "--port"),
        "port x": _c("proxy --port x", "--port"),
        "grace-period under two beats": _c(
            "proxy --port 13999 --heartbeat-interval 10 --grace-period 5", "--grace-period"
        ),
        "storage a proxy": _c(
            "proxy --port 13999 --storage grpc://127.0.0.1:13998", "database URL", storage=False
        ),
        "storage missing": _c(
            "proxy --port 13999 --storage sqlite:///lrtnue.db", "no storage at", storage=False
        ),
        "storage scheme": _c("proxy --port 13999 --storage foo://x", "foo", storage=False),
        "host unknown": _c("proxy --port 13999 --host no.such.host.invalid", "cannot listen"),
    },
    "ls": {
        "stray argument": _c("ls extra", "extra"),
        "unknown flag": _c("ls --frob", "--frob"),
        "storage missing": _c("ls --storage sqlite:///lrtnue.db", "no storage at", storage=False),
        "storage scheme": _c("ls --storage foo://x", "foo", storage=False),
        "storage foreign sqlite": _c(
            "ls --storage sqlite:///{dir}/foreign.db", "foreign.db", storage=False
        ),
        "storage no scheme, password": _c(
            "ls --storage root:SECRET@127.0.0.1:1/db", "storage", storage=False
        ),
        "storage raw @ in password": _c(
            "ls --storage postgresql+psycopg://u:pa@SECRET@127.0.0.1:1/db", "u:", storage=False
        ),
        "storage port": _c("ls --storage postgresql://u@h:abc/db", "port", storage=False),
        "storage no database": _c(
            "ls --storage postgresql://u@127.0.0.1:1/", "no database", storage=False
        ),
    },
}


def _params() -> list[Any]:
    out = []
    for command, cases in CASES.items():
        for cid, case in cases.items():
            if isinstance(case, Case):
                out.append(pytest.param(command, case, id=f"{command}: {cid}"))
            else:  # pytest.param(case, id, marks)
                (inner,) = case.values
                out.append(pytest.param(command, inner, id=f"{command}: {cid}", marks=case.marks))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real group (one random/none study, two finished trials), the bad files and a
    foreign SQLite database (one table of its own)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    files = root / "files"
    files.mkdir()
    db = root / "group.db"
    url = f"sqlite:///{db}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("LRTUNE_STORAGE", raising=False)
        assert main([*GROUP_STUDY, "--trials", "2", "--storage", url]) == 0
    return {"db": db, "url": url, "dir": files}


GROUP_STUDY = (
    f"study --group {GROUP} --prior none --samplers random --epochs 1 --schedules constant "
    "--pruner none --device cpu"
).split()


def _write_files(files: Path) -> None:
    """(Re)write the input files, so that a case that altered one cannot hide the next's."""
    for path in files.iterdir():
        path.rmdir() if path.is_dir() else path.unlink()
    for name, data in FILES.items():
        (files / name).write_bytes(data)
    (files / "readonly.yaml").chmod(0o444)
    (files / "readonly.json").chmod(0o444)
    (files / "folder.json").mkdir()  # an output path that names a folder
    (files / "folder.png").mkdir()
    conn = sqlite3.connect(files / "foreign.db")
    with conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO notes (text) VALUES ('mine')")
    conn.close()


def _digests(world: dict[str, Any]) -> dict[str, str]:
    paths = sorted(world["dir"].iterdir())
    out = {
        p.name: "folder" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in paths
    }
    out["storage"] = _content(world["db"])
    return out


def _content(db: Path) -> str:
    """A digest of everything the SQLite storage holds, read through SQLite: lrtune runs it
    in WAL mode, where a commit lands in the ``-wal`` file and the database file's own bytes
    stay as they were until a checkpoint."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def _run(argv: list[str]) -> int:
    """``main(argv)``'s exit code, also when argparse exits."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


@pytest.mark.parametrize(("command", "case"), _params())
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    command: str,
    case: Case,
    world: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LRTUNE_STORAGE", raising=False)
    _write_files(world["dir"])
    before = _digests(world)
    argv = [a.format(dir=world["dir"]) for a in case.argv]
    if case.storage:
        argv += ["--storage", world["url"]]
    code = _run(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert "SECRET" not in err, err  # a password in a URL is never shown
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    prefix = "lrtune: error: " if command == "lrtune" else f"lrtune {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    assert case.mention in lines[0], lines[0]
    assert _digests(world) == before  # the storage and every input file byte for byte
    assert sorted(os.listdir(tmp_path)) == []  # no lrtune.db, no output file, no temp file


def test_a_range_test_with_a_nan_loss_gives_the_error_alone(
    world: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A loss that is NaN from the first step: the range test's table of LRs means nothing,
    # only the error line is shown.
    (tmp_path / "nan_task.py").write_text(NAN_TASK, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'nan.db'}"
    argv = ["study", "--task", "nan_task.py:make", "--storage", url, "--device", "cpu"]
    assert _run([*argv, "--samplers", "random", "--trials", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "", captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrtune study: error: range test on ")
    assert "non-finite loss" in lines[0]
    # The storage was new: the failed command leaves no empty database behind.
    assert not [p.name for p in tmp_path.iterdir() if ".db" in p.name]


NAN_TASK = """import torch
from torch import nn

from lrtune.training.tasks import Task


def make(seed: int) -> Task:
    torch.manual_seed(seed)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    return Task(
        model=nn.Linear(4, 2),
        train=(x, y),
        val=(x, y),
        loss_fn=lambda out, t: nn.functional.cross_entropy(out, t) * float("nan"),
        batch_size=16,
        epochs=1,
        name="nan",
    )
"""


def test_resume_with_fewer_trials_says_there_is_nothing_to_run(
    world: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "copy.db"
    copy_sqlite(world["db"], db)
    monkeypatch.chdir(tmp_path)
    assert _run([*GROUP_STUDY, "--trials", "1", "--storage", f"sqlite:///{db}"]) == 0
    out = capsys.readouterr().out
    assert (
        f"note: {STUDY} already has 2 finished trials, more than --trials 1; nothing to run" in out
    ), out
    assert _run([*GROUP_STUDY, "--trials", "2", "--storage", f"sqlite:///{db}"]) == 0
    assert "note:" not in capsys.readouterr().out  # the budget met exactly: nothing to say


def test_a_pinned_worker_imports_no_other_task(
    world: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Someone with write access to the storage points the study at their own module; a
    # worker pinned to the task it expects refuses it before importing anything.
    import optuna

    marker = tmp_path / "imported"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    db = tmp_path / "copy.db"
    copy_sqlite(world["db"], db)
    url = f"sqlite:///{db}"
    study = optuna.load_study(study_name=STUDY, storage=url)
    spec = dict(study.user_attrs["spec"], task=f"{evil}:make", trials=3)
    study.set_user_attr("spec", spec)
    study.set_user_attr("budget", 3)
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--workers", "2"]):
        assert _run(["worker", "--group", GROUP, "--task", "digits", "--storage", url, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "pinned --task 'digits'" in err, err
        assert not marker.exists()
    # Unpinned, the worker does import it: what the pin is for.
    assert _run(["worker", "--group", GROUP, "--storage", url]) == 2
    assert marker.exists()
    capsys.readouterr()


def test_a_worker_pinned_to_the_study_task_runs(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["worker", "--group", GROUP, "--task", "digits", "--storage", world["url"]]
    assert _run(argv) == 0  # the budget is met: it exits at once


IGNORING_FIT = """
from lrtune.training.tasks import digits


def fit(hp, report):
    value = 1.0
    for epoch in range(4):  # its own epochs, not hp.epochs
        value = 1.0 / (epoch + 1)
        report(value, epoch)
    return value


def make(seed):
    task = digits(seed)
    task.fit, task.name, task.epochs = fit, "stubborn", 4
    return task
"""


@pytest.mark.slow
def test_a_fit_that_ignores_hp_epochs_is_warned_about_once(
    tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Not refusable up front (only a trial shows it): one warning naming the task, once per
    # study whatever the number of trials and worker processes, and the study goes on.
    import optuna

    import lrtune.search.objective as objective

    path = tmp_path / "stubborn.py"
    path.write_text(IGNORING_FIT)
    task = f"{path}:make"
    caplog.set_level(logging.WARNING)
    args = ["study", "--task", task, "--prior", "none", "--samplers", "random", "--confirm"]
    args += ["0", "--rungs", "1,2,4", "--epochs", "4", "--storage", sqlite_url]
    objective._WARNED.clear()
    assert _run([*args, "--trials", "1"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "ignores hp.epochs" in r.getMessage()]
    assert len(warnings) == 1, warnings  # several short trials, one warning
    assert warnings[0].startswith(f"task {task} ignores hp.epochs")
    assert "rung trial of 1 epoch(s) reported epoch 4" in warnings[0]
    study = optuna.load_study(study_name="stubborn.random.none", storage=sqlite_url)
    assert study.user_attrs[objective.IGNORES_EPOCHS] == {"epochs": 1, "reported": 4}
    before = study.get_trials()
    assert all(t.value is not None for t in before if t.state.is_finished())
    # Another worker process (a fresh _WARNED) on the same study says it no more.
    objective._WARNED.clear()
    caplog.clear()
    assert _run([*args, "--trials", "2"]) == 0
    assert "ignores hp.epochs" not in caplog.text
    assert len(study.get_trials()) > len(before)


def count_by_command() -> Counter[str]:
    """Cases per command: the "tried" of the clean/tried count."""
    return Counter(p.values[0] for p in _params())


if __name__ == "__main__":  # pragma: no cover - prints clean/tried per command
    sys.exit(pytest.main([__file__, "-q", "-rxXf", "-k", "bad_input"]))


@pytest.mark.parametrize(
    ("artifacts", "no_boto3", "mention"),
    [
        ("s3://lrtune-bucket/runs", True, "pip install 'lrtune[s3]'"),
        ("s3:///runs", False, "expected s3://BUCKET"),
    ],
    ids=["boto3 missing", "no bucket"],
)
@pytest.mark.parametrize(
    "argv",
    [
        f"worker --group {GROUP}",
        f"export --study {STUDY} --out c.yaml --weights w.pt",
        "dashboard --port 48765",  # refused before it listens
    ],
    ids=["worker", "export", "dashboard"],
)
def test_s3_artifacts_that_cannot_work_are_one_line(
    argv: str,
    artifacts: str,
    no_boto3: bool,
    mention: str,
    world: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """$LRTUNE_ARTIFACTS=s3://... without boto3 (`import boto3` fails) or without a bucket:
    each command that opens the artifact store says so in one line, exit 2, before any
    trial (a worker does not go on without checkpoints), and writes nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LRTUNE_STORAGE", raising=False)
    monkeypatch.setenv("LRTUNE_ARTIFACTS", artifacts)
    if no_boto3:
        monkeypatch.setitem(sys.modules, "boto3", None)  # what a missing package gives
    before = _content(world["db"])
    code = _run([*argv.split(), "--storage", world["url"]])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"lrtune {argv.split()[0]}: error: "), lines[0]
    assert mention in lines[0] and artifacts in lines[0], lines[0]
    assert _content(world["db"]) == before
    assert sorted(os.listdir(tmp_path)) == []
