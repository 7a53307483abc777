"""Every file the package writes or appends goes through this module.

What it guarantees (docs/untrusted_files.md, "One writer"):

- **Atomic**: a file appears complete under its name or not at all: written to a fresh temporary
  file beside it (created with O_EXCL | O_NOFOLLOW, so no planted link can redirect it), then
  `os.replace`d. A streamed file (a TFRecord shard, an .npz of samples) is the same, chunk by
  chunk (`atomic_file`).
- **Never through a symlink**: a target that is a symlink is refused, never followed (a run copied
  from someone else could hold `results.json -> ~/.bashrc`); appends open with O_NOFOLLOW too.
- **Inside the root** when the caller names one: `root=` confines the target (names.confine: `..`,
  absolute paths and symlinked folders resolved) to the directory the user gave.
- **Keeps what is not ours** (`write_keeping`): a file that does not carry our format tag, or holds
  more than the new one, is never replaced; the new text goes beside it (`<name>.new<ext>`) and
  the caller says so. Why: `study report` on a fresh clone once replaced a committed 24-run report
  with an empty one, and `--mode=evaluate` replaced a user's notes file named like our table.

tests/test_writer.py scans the package: any other `open(..., 'w' / 'a')`, `os.replace`,
`np.save*`, `json.dump` to a file, `savefig`, `shutil.copy*` fails it. Libraries that write their
own formats (Orbax checkpoints, TensorBoard event files) write into folders that
`names.check_workdir` has confined to the work directory.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
from typing import Callable

import numpy as np

from lct_jax.names import UnsafeNameError, confine


class UnsafeWriteError(UnsafeNameError):
    """A write refused: the target is a symlink, or lies outside the root it must stay in."""


def beside(path: str) -> str:
    """results.md -> results.new.md; the name a kept file's would-be replacement gets."""
    stem, ext = os.path.splitext(path)
    return f'{stem}.new{ext}'


def _check_target(path: str, root: str | None) -> str:
    if root is not None:
        path = confine(root, path, 'a file to write')
    if os.path.islink(path):
        raise UnsafeWriteError(f'{path} is a symlink (to {os.readlink(path)}): refused, a link is never written '
                               'through; remove it if this file should be written')
    return path


_TEMPORARY = re.compile(r'^\.(?P<base>.+)\.(?P<pid>\d+)\.(?P<i>\d+)\.tmp$')


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str) -> list[str]:
    """Remove the temporaries (`_fresh_temporary`'s names) that a killed process of this host left in
    `directory`: a live writer's are left alone. The names removed."""
    removed = []
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        m = _TEMPORARY.match(name)
        if m and not _pid_alive(int(m.group('pid'))) and not os.path.islink(os.path.join(directory, name)):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))
                removed.append(name)
    return removed


def _fresh_temporary(path: str) -> tuple[str, int]:
    """(name, fd) of a new file beside `path`, opened O_EXCL | O_NOFOLLOW: nobody's link or file."""
    directory = os.path.dirname(path) or '.'
    base = os.path.basename(path)
    for i in range(100):
        tmp = os.path.join(directory, f'.{base}.{os.getpid()}.{i}.tmp')
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, f'no free temporary name beside {path}')


class AtomicFile:
    """A file written under a temporary name beside `path`: `commit()` renames it onto `path`
    (fsynced first with `durable`), `abort()` removes it. For writers that stream (TFRecord shards,
    the samples' .npz); `atomic_file` is the same as a `with` block. mode 'wb' or 'w'."""

    def __init__(self, path: str, mode: str = 'wb', root: str | None = None, make_parents: bool = True,
                 durable: bool = False):
        if mode not in ('wb', 'w'):
            raise ValueError(f'AtomicFile mode {mode!r}: wb or w')
        self.path, self.root, self.durable = _check_target(path, root), root, durable
        if make_parents:
            os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
        self.tmp, fd = _fresh_temporary(self.path)
        self.file = os.fdopen(fd, mode, **({} if 'b' in mode else {'encoding': 'utf-8'}))

    def write(self, data):
        return self.file.write(data)

    def commit(self) -> str:
        self.file.flush()
        if self.durable:
            os.fsync(self.file.fileno())
        self.file.close()
        _check_target(self.path, self.root)  # no link planted meanwhile
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            os.remove(self.tmp)


@contextlib.contextmanager
def atomic_file(path: str, mode: str = 'wb', root: str | None = None, make_parents: bool = True):
    """`with atomic_file(p) as f: f.write(...)`: f is a temporary file beside `p`, renamed onto
    `p` when the block ends without an error (and removed if it raises). mode 'wb' or 'w'."""
    out = AtomicFile(path, mode, root, make_parents)
    try:
        yield out.file
    except BaseException:
        out.abort()
        raise
    out.commit()


def write_bytes(path: str, data: bytes, root: str | None = None) -> str:
    with atomic_file(path, 'wb', root) as f:
        f.write(data)
    return path


def write_text(path: str, text: str, root: str | None = None) -> str:
    return write_bytes(path, text.encode('utf-8'), root)


def write_json(path: str, value, root: str | None = None, newline: bool = True, **dump_args) -> str:
    dump_args = {'indent': 1, **dump_args}
    return write_text(path, json.dumps(value, **dump_args) + ('\n' if newline else ''), root)


def write_npz(path: str, root: str | None = None, **arrays) -> str:
    """An .npz (no pickles: object arrays are refused by the readers anyway)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_bytes(path, buffer.getvalue(), root)


def append_line(path: str, line: str, root: str | None = None) -> None:
    """One line appended (an O_APPEND write: whole lines, never through a symlink)."""
    for text in (line if isinstance(line, (list, tuple)) else [line]):
        with open_append(path, root) as f:
            f.write(text if text.endswith('\n') else text + '\n')


def open_append(path: str, root: str | None = None):
    """A text file opened for appending, never through a symlink (O_NOFOLLOW); the caller closes it."""
    path = _check_target(path, root)
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeWriteError(f'{path} is a symlink: refused, a link is never written through') from None
        raise
    return os.fdopen(fd, 'a', encoding='utf-8')


def save_figure(fig, path: str, root: str | None = None, **savefig_args) -> str:
    """A matplotlib figure as PNG, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', **savefig_args)
    return write_bytes(path, buffer.getvalue(), root)


def save_pil_image(image, path: str, root: str | None = None, **save_args) -> str:
    """A PIL image, in the format its extension names, atomically."""
    buffer = io.BytesIO()
    fmt = 'JPEG' if path.lower().endswith(('.jpg', '.jpeg')) else 'PNG'
    image.save(buffer, format=fmt, **save_args)
    return write_bytes(path, buffer.getvalue(), root)


def copy_file(src: str, dst: str, root: str | None = None) -> str:
    with open(src, 'rb') as f, atomic_file(dst, 'wb', root) as out:
        shutil.copyfileobj(f, out)
    return dst


def copy_tree_replacing(src: str, dst: str, ignore=None, root: str | None = None) -> str:
    """`dst` becomes a copy of `src` (symlinks copied as links, never followed), built beside it and
    swapped in: a reader sees the old tree or the new one."""
    dst = _check_target(dst, root)
    tmp = f'{dst}.{os.getpid()}.partial'
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, symlinks=True, ignore=ignore)
    if os.path.isdir(dst):
        old = f'{dst}.{os.getpid()}.old'
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dst)
    return dst


# --- the keep rule ----------------------------------------------------------------------------

_NUMBER_CELL = re.compile(r'^\s*[+\-−]?\d')


def count_numbers(text: str) -> int:
    """Table cells of a markdown text that hold a number: what a regenerated table can lose."""
    return sum(1 for line in text.splitlines() if line.lstrip().startswith('|')
               for cell in line.strip().strip('|').split('|') if _NUMBER_CELL.match(cell))


def write_keeping(path: str, text: str, measure: Callable[[str], int] | None = None,
                  tag: str | tuple | None = None, replace: bool = False, root: str | None = None) -> str:
    """Write `text` to `path` unless the file there must be kept: it does not hold our format
    `tag` (someone else's file that happens to have the name), or `measure` says it holds more
    than `text` (a regenerated table or report made from fewer inputs). Then write `beside(path)`.
    `replace` (the commands' --replace) overrides the second rule, never the first. `tag` may be a
    tuple: the current tag and the marks of files this code wrote before it had one. A symlink is
    not ours either (it is never written through). The path written."""
    tags = (tag,) if isinstance(tag, str) else tag
    if os.path.islink(path):
        return write_text(beside(path), text, root)
    path = _check_target(path, root)
    if os.path.lexists(path):
        try:
            with open(path, encoding='utf-8') as f:
                old = f.read()
        except (OSError, UnicodeDecodeError):
            old = None
        if old is None or (tags is not None and not any(t in old for t in tags)):
            path = beside(path)
        elif measure is not None and not replace and measure(old) > measure(text):
            path = beside(path)
    return write_text(path, text, root)


def create_exclusive(path: str, text: str = '') -> bool:
    """Create `path` holding `text` if nothing (no file, no link) has that name: True; else False.
    The primitive of a lock (O_CREAT | O_EXCL: two creators cannot both succeed)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write(text)
    return True
