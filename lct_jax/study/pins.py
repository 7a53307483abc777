"""A study's pinned inputs: files every run reads (an autoencoder's weights, pre-encoded latents) and
the sha256 each must have, so that no run of a study trains on inputs the others did not.

Why: an input remade on another machine is not the same input. The latent study's autoencoder,
retrained from the same config and seed on a different CPU, came out different (PSNR 43.12 vs
42.89 dB, normalised-latent kurtosis 1.81 vs 1.98: float reductions run in another order), and runs
trained on it would have been mixed silently with runs trained on the first one. So a study names
its inputs and their checksums (`pins`); the runner refuses to start or resume a run unless every
pin matches, and writes the verified pins into the run (`study_logs/pins.json`); the report leaves
out, and names, any run whose recorded pins are not the study's.

A pin's path is a file or a directory; a directory's digest covers every file under it (relative
names and contents, in sorted order), so a re-encode, a missing shard or one flipped byte shows.
"""
from __future__ import annotations

import hashlib
import os

from lct_jax import writer
from lct_jax.models.autoencoder import file_sha256
from lct_jax.study.spec import substitute
from lct_jax.untrusted import read_json

RUN_PINS = os.path.join('study_logs', 'pins.json')


class PinMismatch(RuntimeError):
    pass


def tree_sha256(path: str) -> str:
    """sha256 of a file, or of a directory: over (relative name, file sha256) of every file under it."""
    if os.path.isfile(path):
        return file_sha256(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f'pinned input {path} does not exist')
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            h.update(os.path.relpath(full, path).replace(os.sep, '/').encode() + b'\0')
            h.update(file_sha256(full).encode() + b'\n')
    return h.hexdigest()


def actual(pins: dict, study_dir: str) -> dict:
    """{path as the study file writes it: its digest now} for every pinned path."""
    return {p: tree_sha256(substitute(p, study_dir)) for p in pins}


def check(pins: dict, study_dir: str) -> dict:
    """The pins, verified: raises PinMismatch naming every path whose digest is not the pinned one.
    Keys are the study file's own paths (with {root} / {study_dir}), so a run's record is the same on
    every machine and in every copy of the study."""
    now = actual(pins, study_dir)
    wrong = [f'  {substitute(p, study_dir)}\n    pinned {pins[p]}\n    found  {now[p]}' for p in pins if now[p] != pins[p]]
    if wrong:
        raise PinMismatch('the study\'s pinned inputs are not the ones its runs must read:\n' + '\n'.join(wrong)
                          + '\nrestore them (the study file says where they come from) or, for a new study, '
                          'pin the new ones (`python -m lct_jax.study pins <study>` prints the digests)')
    return dict(pins)


def record(workdir: str, pins: dict) -> None:
    """Write the verified pins into a run; refuses if the run was started on other inputs."""
    path = os.path.join(workdir, RUN_PINS)
    before = recorded(workdir)
    if before is not None and before != pins:
        raise PinMismatch(f'{workdir} was started on other inputs ({path}: {before}); the study now pins '
                          f'{pins}. Start it afresh (move the directory away) rather than mix the two')
    writer.write_json(path, pins, sort_keys=True)


def recorded(workdir: str) -> dict | None:
    path = os.path.join(workdir, RUN_PINS)
    if not os.path.exists(path):
        return None
    return read_json(path, "a run's record of its pinned inputs", expect=dict)
