"""The package's import graph, read from its source: every `import` of an lct_jax module, at module
level or inside a function, as an edge. Used by tests/test_layout.py and, run as a script, prints
the numbers the layout is judged by:

    python tests/import_graph.py      # modules, edges, import circles, imports inside functions
"""
from __future__ import annotations

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'lct_jax'


def modules(root: str = ROOT) -> dict[str, str]:
    """{dotted module name: file path} of every module of the package."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, PACKAGE)):
        dirnames[:] = sorted(d for d in dirnames if d != '__pycache__')
        for name in sorted(filenames):
            if name.endswith('.py'):
                rel = os.path.relpath(os.path.join(dirpath, name), root)[:-3].replace(os.sep, '.')
                out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = os.path.join(dirpath, name)
    return out


class Import:
    def __init__(self, source: str, target: str, line: int, in_function: bool, text: str):
        self.source, self.target, self.line, self.in_function, self.text = source, target, line, in_function, text


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that `name` is or lies in (`lct_jax.a.b.func` -> `lct_jax.a.b`)."""
    parts = name.split('.')
    for i in range(len(parts), 0, -1):
        candidate = '.'.join(parts[:i])
        if candidate in known:
            return candidate
    return None


def imports(root: str = ROOT) -> list[Import]:
    mods = modules(root)
    known = set(mods)
    found = []
    for module, path in mods.items():
        source = open(path).read()
        tree = ast.parse(source)
        lines = source.splitlines()
        package = module if path.endswith('__init__.py') else module.rpartition('.')[0]

        def visit(node, in_function: bool):
            for child in ast.iter_child_nodes(node):
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                names = []
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ''
                    if child.level:
                        base = '.'.join(package.split('.')[:len(package.split('.')) - child.level + 1]
                                        + ([base] if base else []))
                    # `from pkg import sub` imports the submodule when there is one
                    names = [f'{base}.{a.name}' if f'{base}.{a.name}' in known else base for a in child.names]
                for name in names:
                    if name.split('.')[0] != PACKAGE:
                        continue
                    target = _resolve(name, known)
                    if target and target != module:
                        found.append(Import(module, target, child.lineno, in_function,
                                            lines[child.lineno - 1].strip()))
                visit(child, inner)

        visit(tree, False)
    return found


def cycles(edges: list[Import]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan): each is an import circle."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def summary(root: str = ROOT) -> dict:
    edges = imports(root)
    return {'modules': len(modules(root)), 'imports': len(edges),
            'distinct_edges': len({(e.source, e.target) for e in edges}),
            'imports_inside_functions': sum(e.in_function for e in edges),
            'cycles': cycles(edges)}


if __name__ == '__main__':
    s = summary(sys.argv[1] if len(sys.argv) > 1 else ROOT)
    print(f"{s['modules']} modules, {s['imports']} lct_jax imports ({s['distinct_edges']} distinct edges), "
          f"{s['imports_inside_functions']} inside functions, {len(s['cycles'])} import circle(s)")
    for c in s['cycles']:
        print('  circle:', ' <-> '.join(c))
