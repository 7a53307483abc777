"""Reproducibility studies: a base config x variants x seeds, each run an ordinary training run in its
own work directory; aggregated with seeds' spread, bootstrap intervals and paired differences.
Entry point: `python -m lct_jax.study` (see __main__.py)."""
