"""Reading compiled XLA programs: the loops a device would run.

A `while` whose trip count XLA knows at compile time (its backend config holds
`known_trip_count`, as for the threefry RNG's fixed rounds) is unrolled or run
as a counted loop. One whose count depends on the data (a Hungarian's
augmenting-path search) costs, on a GPU, kernel launches and a predicate read
back to the host per iteration: those are the loops the train step must not
hold.
"""
from __future__ import annotations

import re

_WHILE = re.compile(r'\swhile\(')   # the instruction, not 'while' in an op name of the metadata


def while_loops(hlo_text: str) -> list[str]:
    """Every `while` instruction of an HLO module's text."""
    return [line.strip() for line in hlo_text.splitlines() if _WHILE.search(line)]


def data_dependent_while_loops(hlo_text: str) -> list[str]:
    """The `while` instructions whose trip count XLA could not determine."""
    return [w for w in while_loops(hlo_text) if 'known_trip_count' not in w]


def count_data_dependent_while_loops(compiled) -> int:
    """The number of data-dependent `while` loops of a compiled (or lowered) program."""
    text = compiled.as_text() if hasattr(compiled, 'as_text') else str(compiled)
    return len(data_dependent_while_loops(text))
