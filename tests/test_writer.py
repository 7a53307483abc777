"""The one writer (lct_jax/writer.py): atomic, never through a symlink, inside its root, and the
keep rule; and a scan of the package that fails on any write that does not go through it."""
import ast
import json
import os

import numpy as np
import pytest

from lct_jax import writer
from lct_jax.names import UnsafeNameError
from tests import import_graph

# What counts as writing a file: the calls below, or open() / os.fdopen() / os.open() in a writing mode.
WRITE_CALLS = {('os', 'replace'), ('os', 'rename'), ('os', 'renames'), ('shutil', 'copy'), ('shutil', 'copy2'),
               ('shutil', 'copyfile'), ('shutil', 'copytree'), ('shutil', 'move'), ('np', 'save'),
               ('np', 'savez'), ('np', 'savez_compressed'), ('np', 'savetxt'), ('json', 'dump'),
               ('pickle', 'dump'), ('os', 'symlink'), ('os', 'link')}
WRITE_METHODS = {'savefig', 'write_text', 'write_bytes', 'tofile'}   # fig.savefig(path), Path.write_text, ...


def _mode_of(call: ast.Call):
    if isinstance(call.func, ast.Name) and call.func.id == 'open' or \
            isinstance(call.func, ast.Attribute) and call.func.attr == 'fdopen':
        args = [a for a in call.args[1:2]] + [k.value for k in call.keywords if k.arg == 'mode']
        return args[0].value if args and isinstance(args[0], ast.Constant) else 'r'
    return None


def forbidden_writes() -> list[str]:
    """Every call in the package, outside writer.py, that writes a file itself."""
    found = []
    for module, path in import_graph.modules().items():
        if module == 'lct_jax.writer':
            continue
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            where = f'{module}:{node.lineno}'
            mode = _mode_of(node)
            if mode is not None and any(c in mode for c in 'wax+'):
                found.append(f'{where} opens a file with mode {mode!r}')
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in WRITE_CALLS:
                found.append(f'{where} calls {f.value.id}.{f.attr}')
            if isinstance(f, ast.Attribute) and f.attr in WRITE_METHODS and node.args and \
                    not (isinstance(f.value, ast.Name) and f.value.id == 'writer'):
                found.append(f'{where} calls .{f.attr}(...)')
            if isinstance(f, ast.Attribute) and f.attr == 'open' and isinstance(f.value, ast.Name) and f.value.id == 'os':
                flags = ast.unparse(node.args[1]) if len(node.args) > 1 else ''
                if any(w in flags for w in ('O_WRONLY', 'O_RDWR', 'O_CREAT', 'O_APPEND')):
                    found.append(f'{where} calls os.open({flags})')
            if isinstance(f, ast.Attribute) and f.attr == 'ZipFile' and any(
                    isinstance(a, ast.Constant) and a.value in ('w', 'a', 'x') for a in node.args[1:2]):
                if 'AtomicFile' not in ast.unparse(node.args[0]) and '.file' not in ast.unparse(node.args[0]):
                    found.append(f'{where} opens a zip file for writing')
    return found


def test_every_write_of_the_package_goes_through_the_writer():
    assert forbidden_writes() == []


def test_the_scan_finds_each_kind_of_write(tmp_path, monkeypatch):
    """The scan itself: a module holding each forbidden write is caught (so the test above can fail)."""
    pkg = tmp_path / 'lct_jax'
    pkg.mkdir()
    (pkg / '__init__.py').write_text('')
    (pkg / 'bad.py').write_text(
        'import json, os, shutil\nimport numpy as np\n'
        'def f(p, fig, x):\n'
        "    open(p, 'w').write('x')\n    open(p, mode='a')\n    os.replace(p, p)\n    np.savez(p, a=x)\n"
        "    json.dump({}, open(p))\n    fig.savefig(p)\n    shutil.copyfile(p, p)\n    os.open(p, os.O_WRONLY)\n"
        "    open(p).read()\n")
    monkeypatch.setattr(import_graph, 'ROOT', str(tmp_path))
    monkeypatch.setattr(import_graph, 'modules', lambda root=str(tmp_path): {
        'lct_jax': str(pkg / '__init__.py'), 'lct_jax.bad': str(pkg / 'bad.py')})
    found = forbidden_writes()
    assert len(found) == 8 and sorted(int(f.split(':')[1].split()[0]) for f in found) == list(range(4, 12)), found


def test_atomic_and_leaves_no_temporary_behind(tmp_path):
    path = tmp_path / 'a' / 'b.json'
    writer.write_json(str(path), {'x': 1})
    assert json.loads(path.read_text()) == {'x': 1} and sorted(os.listdir(path.parent)) == ['b.json']
    with pytest.raises(RuntimeError):
        with writer.atomic_file(str(path), 'w') as f:
            f.write('half')
            raise RuntimeError('killed halfway')
    assert json.loads(path.read_text()) == {'x': 1} and sorted(os.listdir(path.parent)) == ['b.json']


def test_never_through_a_symlink(tmp_path):
    outside = tmp_path / 'outside.txt'
    outside.write_text('the user\'s file')
    link = tmp_path / 'wd' / 'results.json'
    link.parent.mkdir()
    link.symlink_to(outside)
    for write in (lambda: writer.write_text(str(link), 'x'), lambda: writer.append_line(str(link), 'x'),
                  lambda: writer.write_npz(str(link), a=np.zeros(2))):
        with pytest.raises(writer.UnsafeWriteError, match='symlink'):
            write()
    # the keep rule: a link is not ours, so the new text goes beside it
    assert writer.write_keeping(str(link), 'x', tag='t') == str(link.parent / 'results.new.json')
    assert outside.read_text() == 'the user\'s file'


def test_a_root_confines_the_target(tmp_path):
    root = tmp_path / 'wd'
    (root / 'sub').mkdir(parents=True)
    (tmp_path / 'elsewhere').mkdir()
    os.symlink(tmp_path / 'elsewhere', root / 'escape')
    for bad in ('../x.json', str(tmp_path / 'x.json'), 'escape/x.json', 'sub/../../x.json'):
        with pytest.raises(UnsafeNameError, match='outside'):
            writer.write_text(os.path.join(str(root), bad) if not os.path.isabs(bad) else bad, 'x', root=str(root))
    assert not (tmp_path / 'x.json').exists() and os.listdir(tmp_path / 'elsewhere') == []
    writer.write_text(str(root / 'sub' / 'ok.txt'), 'y', root=str(root))


def test_the_keep_rule_writes_beside_what_is_not_ours_or_holds_more(tmp_path):
    notes = tmp_path / 'comparison_digits.md'
    notes.write_text('my notes: no table here\n')
    written = writer.write_keeping(str(notes), '<!-- tag -->\n| a | 1 |\n', writer.count_numbers, tag='<!-- tag -->')
    assert written == str(tmp_path / 'comparison_digits.new.md') and notes.read_text() == 'my notes: no table here\n'
    ours = tmp_path / 'table.md'
    ours.write_text('<!-- tag -->\n| a | 1 | 2 |\n')
    assert writer.write_keeping(str(ours), '<!-- tag -->\n| a | 1 |\n', writer.count_numbers, tag='<!-- tag -->') \
        == str(tmp_path / 'table.new.md')                             # holds fewer numbers: beside
    assert writer.write_keeping(str(ours), '<!-- tag -->\n| a | 1 |\n', writer.count_numbers, tag='<!-- tag -->',
                                replace=True) == str(ours)            # --replace: replaced
    assert writer.write_keeping(str(notes), 'x', tag='<!-- tag -->', replace=True) != str(notes)  # never someone's


def test_exclusive_creation_refuses_an_existing_name_and_a_link(tmp_path):
    p = tmp_path / 'lock.json'
    assert writer.create_exclusive(str(p), '{}') and not writer.create_exclusive(str(p), '{}')
    link = tmp_path / 'l.json'
    link.symlink_to(tmp_path / 'nowhere.json')
    assert not writer.create_exclusive(str(link), '{}') and not (tmp_path / 'nowhere.json').exists()
