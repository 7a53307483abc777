"""The config a read-only mode (sample, evaluate, analyze) runs with: the run's recorded one
(<workdir>/config.json, data from wherever the run came from) with the command line's flags on
top, checked like a command-line config before anything is written."""
from __future__ import annotations

import os

from lct_jax.builders import check_config
from lct_jax.workdir import record


def run_config(config, workdir: str, overrides: dict):
    merged = record.config_of_run(config, workdir, overrides)
    if merged is config:
        return config
    try:
        check_config(merged)
    except ValueError as e:
        raise ValueError(f'{os.path.join(workdir, record.CONFIG_FILE)}: {e}') from None
    return merged
