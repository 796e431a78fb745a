"""The search: what a study searches and how one trial of it runs.

- :mod:`~lrtune.search.spec`: ``StudySpec`` from a ``studies/*.toml`` file and flags;
- :mod:`~lrtune.search.space`: the search space (``lr``, ``schedule``, schedule and optimizer
  parameters) and the grid;
- :mod:`~lrtune.search.samplers`: Optuna's samplers and pruners by name (one table each);
- :mod:`~lrtune.search.objective`: one Optuna trial = one training run, its errors handled;
- :mod:`~lrtune.search.widen`: growing a prior's bounds where the best trials crowd an edge;
- :mod:`~lrtune.search.states`: trial states and group membership, torch-free.

Nothing is imported here, so ``lrtune.search.states`` stays free of torch.
"""
