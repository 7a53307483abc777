"""Orbax checkpoints in <workdir>/checkpoints/<step>/: save, keep policy, restore.

Saves are atomic (Orbax writes a temporary directory and renames it when
complete), so an interrupted or failed save never replaces the previous
checkpoint. We keep the last `keep` checkpoints plus every `keep_period`-th.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    pass


def make_manager(workdir: str, keep: int = 3, keep_period: int | None = None,
                 async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, keep_period=keep_period or None, create=True,
        enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                                 options=options)


def save(manager: ocp.CheckpointManager, step: int, state, force: bool = False) -> bool:
    try:
        return manager.save(step, args=ocp.args.StandardSave(state), force=force)
    except OSError as e:  # e.g. the disk is full: the previous checkpoint is untouched
        raise CheckpointError(f'saving the checkpoint of step {step} failed ({e}); the previous '
                              f'checkpoint ({manager.latest_step()}) is intact') from e


def abstract_like(state):
    """ShapeDtypeStructs (with shardings) of a state, the restore target."""
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, 'sharding', None)), state)


def restore(manager: ocp.CheckpointManager, step: int, target):
    """Restore `step` into the structure, dtypes and shardings of `target`."""
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract_like(target)))
    except Exception as e:  # noqa: BLE001 - Orbax raises many kinds; say what and where
        path = os.path.join(str(manager.directory), str(step))
        raise CheckpointError(f'cannot restore the checkpoint at {path}: {type(e).__name__}: {e}') from e
