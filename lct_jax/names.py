"""Names that become paths: checked before anything is written, so none can escape its folder.

A study's name, its variant names, a shard name in a manifest: each is joined to a
folder to make a path. A name holding `..`, a separator or an absolute path would
put files outside that folder (a study variant named `../../../escape` trained and
wrote its run outside --workroot), so each must be one plain path component.
"""
from __future__ import annotations

import os


class UnsafeNameError(ValueError):
    """A name that would become a path outside its folder (or no usable path at all)."""


def check_component(name, what: str) -> str:
    """`name` if it is one plain path component; else UnsafeNameError saying why."""
    if not isinstance(name, str):
        raise UnsafeNameError(f'{what} {name!r}: expected a string, found a {type(name).__name__}')
    why = (
        'it is empty' if not name else
        'it is "." or ".."' if name in ('.', '..') else
        'it holds a path separator ("/" or "\\")' if '/' in name or '\\' in name or os.sep in name else
        'it holds a NUL or control character' if any(ord(c) < 32 for c in name) else
        'it is longer than 255 bytes' if len(name.encode('utf-8', 'surrogatepass')) > 255 else
        'it starts with "-" (it would read as a command-line flag)' if name.startswith('-') else None)
    if why:
        raise UnsafeNameError(f'{what} {name!r} cannot be used: it becomes a file or folder name, and {why}; '
                              f'use a plain name such as "sLCT" or "no_ot"')
    return name


def join_inside(root: str, *components: str, what: str = 'name') -> str:
    """root/c1/c2/... after checking each component, and that the result is below `root`."""
    for c in components:
        check_component(c, what)
    path = os.path.join(root, *components)
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:  # a symlink inside root pointing out
        raise UnsafeNameError(f'{what}: {path} resolves to {real}, outside {real_root}')
    return path


def is_inside(root: str, path: str) -> bool:
    """Does `path`, every symlink resolved, lie in `root` (also resolved)?"""
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    return os.path.commonpath([real_root, real]) == real_root


def confine(root: str, path: str, what: str) -> str:
    """`path` (absolute, or relative to `root`) if it resolves inside `root`; else UnsafeNameError.

    The one rule for a path built from a value read from a file (a recorded setting, a name in a
    checkpoint or a study file): it may not lead outside the root the user gave, by `..`, by an
    absolute path or through a symlink (docs/untrusted_files.md)."""
    full = path if os.path.isabs(path) else os.path.join(root, path)
    if not is_inside(root, full):
        raise UnsafeNameError(f'{what}: {path} resolves to {os.path.realpath(full)}, outside {os.path.realpath(root)} '
                              '(a path read from a file may not lead outside the directory it came with)')
    return full


# The folders of a work directory that commands write into (Orbax, TensorBoard and our writer).
WRITE_DIRS = ('checkpoints', 'tensorboard', 'samples', 'analysis', 'study_logs', 'ae_checkpoints', 'vae')


def check_workdir(workdir: str, extra: tuple = ()) -> None:
    """Refuse a work directory whose folders we write into (WRITE_DIRS, and `extra`) lead outside it
    through a symlink: a run received from someone else must not redirect our writes."""
    for name in WRITE_DIRS + tuple(extra):
        path = os.path.join(workdir, name)
        if os.path.lexists(path):
            confine(workdir, path, f'{name}/ of the work directory {workdir}')


def prepare_workdir(workdir: str) -> str:
    """Make the work directory (and its parents); a clear error if the name is taken by a file."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f'--workdir={workdir} is a file, not a directory: name a directory '
                                 '(it is made if absent)')
    try:
        os.makedirs(workdir, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:  # a parent is a file
        raise NotADirectoryError(f'--workdir={workdir} cannot be made: {e.strerror}: {e.filename}') from None
    return workdir
