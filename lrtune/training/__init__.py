"""Training: what a trial trains and how.

- :mod:`~lrtune.training.tasks`: ``Task``, the built-in tasks, loading a user's task;
- :mod:`~lrtune.training.zoo`: the heavier built-in tasks (``charlm``, ``finetune``);
- :mod:`~lrtune.training.data`: a task's batches (on-device index batching, any loader);
- :mod:`~lrtune.training.trainer`: lrtune's loop, ``run_trial`` (the task's own ``fit``
  or lrtune's loop) and the ``Updater`` shared with the range test;
- :mod:`~lrtune.training.optimizers`: optimizers by name;
- :mod:`~lrtune.training.oracle`: dense grids of real training (bounds check, benchmark).
"""
