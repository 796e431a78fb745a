"""A group's lifecycle: the studies of one spec, one per sampler × prior (× repeat), from
creation to the comparison people read.

- :mod:`~lrtune.group.prepare`: the group's studies created or resumed (with the range-test
  prior), :mod:`~lrtune.group.creation` writing one study crash-safely, and
  :mod:`~lrtune.group.baseline` the baseline arms beside them;
- :mod:`~lrtune.group.run`: ``run_group``, what ``lrtune study`` does (prepare, run the
  trials, compare, present);
- :mod:`~lrtune.group.confirm`: the confirm study (its trials:
  :mod:`~lrtune.group.confirm_trial`; what it holds: :mod:`~lrtune.group.confirmations`);
- :mod:`~lrtune.group.compare`: computing the comparison, as the records of
  :mod:`~lrtune.group.comparison` (statistics over repeats: :mod:`~lrtune.group.censored`);
- :mod:`~lrtune.group.present`: the comparison as a table and on the studies.

Nothing is imported here, so reading a comparison costs no torch.
"""
