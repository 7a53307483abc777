"""The fuzz harness (tests/fuzz) at a small count: every reader against mutated copies of real
files, and the real commands on a few of them. The long run is `python -m tests.fuzz.run`
(its table: benchmarks/fuzz.md)."""
import pytest

from tests.fuzz import harness, targets

pytestmark = pytest.mark.faults
PER_READER = 5  # 17 readers: ~85 inputs, ~40 s on 2 shared cores (the seed cases are built once, ~25 s)


def test_every_reader_gives_the_right_result_or_one_error_naming_the_file(tmp_path):
    readers = targets.readers(harness.seed_root())
    results = harness.run_cases(harness.plan(readers, PER_READER, seed=0), str(tmp_path / 'cases'))
    table = harness.outcome_table(results)
    assert set(table) == set(readers)  # every reader was tried
    bad = [r for r in results if r['outcome'] not in harness.OK_OUTCOMES]
    assert not bad, '\n'.join(f'{r["reader"]}: {r["file"]} {r["mutator"]}: {r["outcome"]} {r["detail"]}' for r in bad)
    assert sum(row.get('error', 0) for row in table.values()) > len(results) // 2  # the mutations do bite


def test_real_commands_exit_2_with_one_line_naming_the_file_and_run_no_pickle(tmp_path):
    commands = harness.real_commands(str(tmp_path / 'commands'))
    assert len(commands) == 6
    for c in commands:
        assert c['ok'], c
    assert not any(c['pickle_ran'] for c in commands)


def test_the_harness_sees_a_silent_wrong_result_a_traceback_and_an_unnamed_error(tmp_path):
    """The classification itself, on readers made to fail in each way."""
    import dataclasses
    import os
    reader = targets.readers(harness.seed_root())['FID statistics .npz']
    case = str(tmp_path)
    open(os.path.join(case, 'stats.npz'), 'wb').write(b'not a zip')
    expected = (ValueError,)
    wrong = dataclasses.replace(reader, run=lambda c: 'other')
    assert harness.classify(wrong, case, 'stats.npz', 'orig', expected)['outcome'] == 'wrong'
    assert harness.classify(dataclasses.replace(reader, run=lambda c: 1 / 0), case, 'stats.npz', 'o',
                            expected)['outcome'] == 'traceback'

    def unnamed(c):
        raise ValueError('something is wrong')
    assert harness.classify(dataclasses.replace(reader, run=unnamed), case, 'stats.npz', 'o',
                            expected)['outcome'] == 'error-unnamed'
    assert harness.classify(reader, case, 'stats.npz', 'o', expected)['outcome'] == 'error'
