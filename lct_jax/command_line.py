"""What `python -m lct_jax.main` says before any work starts: its help, a config's variants, and
one-line errors (with the nearest valid name) for a mistyped key or variant.

Pure text and config loading: nothing here imports JAX, so `--help` and `--mode=variants`
answer in well under a second.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import sys

USAGE = """\
lct_jax: sLCT (latent consistency training) in JAX. One config file per experiment.

Usage:
  python -m lct_jax.main --config <file.py>[:variant[,variant...]] --workdir <dir> [--mode M]
                         [--config.<key>=<value> ...] [other flags]

Modes (--mode):
  train              (default) train; resumes from the latest checkpoint in --workdir
  encode             images -> latents as TFRecord shards (train does it on its first start)
  sample             write samples of the latest (or --checkpoint) EMA under <workdir>/samples
  evaluate           FID / precision / recall of the configured samplers -> <workdir>/results.md
  analyze            latents vs pixels: box plots, outlier fractions, kurtosis
  train_autoencoder  a small KL autoencoder on the config's images (configs/digits_latent.py)
  variants           list the config's variants, one line each (no --workdir needed)

Overrides: any field of the config, dotted, e.g.
  --config.total_steps=5000 --config.model.dtype=bfloat16 --config.sampling.ema=ema_0.999
  A mistyped key is an error that lists the valid keys; a resumed run refuses a changed
  training key unless --allow_config_change (the change is recorded in run.json).

Examples:
  python -m lct_jax.main --config configs/default.py --workdir workdir/default
  python -m lct_jax.main --config configs/default.py --workdir workdir/default --mode evaluate
  python -m lct_jax.main --config configs/celebahq256.py --mode variants
  python -m lct_jax.main --config configs/celebahq256.py:ilct,smoke --workdir /tmp/smoke

Read more: README.md, docs/configs.md (configs and variants), docs/workdir.md (the work
directory), docs/evaluation.md, docs/training_at_scale.md (multi-host, speed options).
"""

HELP_FLAGS = ('--help', '-h', '--helpshort', '--helpfull', '-?')


def wants_help(argv) -> bool:
    return any(a in HELP_FLAGS for a in argv)


def help_text(flag_values) -> str:
    """The usage above, then this program's own flags as absl describes them."""
    flags_help = flag_values.main_module_help() if hasattr(flag_values, 'main_module_help') else ''
    own = [line for line in flags_help.splitlines() if line.startswith(' ')]  # not the module's path
    return USAGE + '\nFlags:\n' + '\n'.join(own) + '\n'


def config_arg(argv) -> str | None:
    """The value of --config (file[:variant]), however it was written."""
    value = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
    if value is None and '--config' in argv and argv.index('--config') + 1 < len(argv):
        value = argv[argv.index('--config') + 1]
    return value


def make_config_package_importable(argv) -> None:
    """Let a config file's `from configs import base` find its own siblings, from any directory.

    Config files are named by path, and import their base by package name; the
    package's parent goes first on sys.path so that name means the package the
    file sits in (not whatever the working directory or an install provides).
    """
    value = config_arg(argv)
    if not value:
        return
    folder = os.path.dirname(os.path.abspath(value.partition(':')[0]))
    while os.path.isfile(os.path.join(folder, '__init__.py')):
        folder = os.path.dirname(folder)
    if folder not in sys.path:
        sys.path.insert(0, folder)


def load_config_module(path: str):
    """The config file as a module (not yet called)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'no config file {path}')
    spec = importlib.util.spec_from_file_location('_lct_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_variants(module) -> dict[str, str]:
    """{variant: one line} of a config module (its VARIANTS table); {} for a file without one."""
    return dict(getattr(module, 'VARIANTS', {}) or {})


def variants_listing(path: str) -> str:
    """What --mode=variants prints: every variant of the config at `path`, one line each."""
    table = config_variants(load_config_module(path))
    if not table:
        return f'{path} defines no variants (no VARIANTS table)'
    width = max(len(name) for name in table)
    lines = [f'{path}: {len(table)} variants (combine with commas: {path}:a,b)']
    lines += [f'  {name:<{width}}  {text}' for name, text in table.items()]
    return '\n'.join(lines)


def nearest(name: str, valid) -> str | None:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_variant_message(argv) -> str | None:
    """For --config=file:variants naming a variant the file lacks: the config's own one-line error
    (it names the nearest valid variant), prefixed by the file."""
    value = config_arg(argv)
    if not value or ':' not in value:
        return None
    path, _, arg = value.partition(':')
    module = load_config_module(path)
    table = config_variants(module)
    if not table or all(name in table for name in arg.split(',') if name):
        return None
    try:
        module.get_config(arg)
    except ValueError as e:
        return f'{path}: {e}'
    return None


def unknown_key_message(argv) -> str | None:
    """For `--config.a.b=v` overrides naming keys the config lacks: which key, the nearest valid
    one, and all valid ones at that level."""
    value = config_arg(argv)
    if value is None:
        return None
    path, _, arg = value.partition(':')
    module = load_config_module(path)
    config = module.get_config(arg) if arg else module.get_config()
    for a in argv:
        if not a.startswith('--config.'):
            continue
        node, keys = config, a[len('--config.'):].split('=', 1)[0].split('.')
        for depth, key in enumerate(keys):
            if not hasattr(node, 'keys') or key not in node.keys():
                where = '.'.join(keys[:depth]) or 'the top level'
                valid = sorted(node.keys()) if hasattr(node, 'keys') else []
                close = nearest(key, valid)
                hint = f' (did you mean {".".join(keys[:depth] + [close])!r}?)' if close else ''
                return (f'unknown config key {".".join(keys)!r}{hint}: {where} has no {key!r}; '
                        f'valid keys: {valid}')
            node = node[key]
    return None
