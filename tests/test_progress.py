"""The progress line: its rate and ETA, and a clock restarted after a compiling first step."""
import io

from lct_jax import progress as progress_lib


def test_the_eta_counts_from_the_restarted_clock_not_from_the_compile(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress_lib.time, 'time', lambda: now[0])
    p = progress_lib.Progress('train', 100, unit='steps', stream=io.StringIO())
    now[0] = 60.0                         # the first step took a minute: it compiled
    p.restart_clock(1)
    now[0] = 70.0                         # then 10 steps in 10 s
    line = p.line(11)
    assert '1.00 steps/s' in line and 'ETA 01:29' in line, line   # 89 steps left at 1 step/s
    fresh = progress_lib.Progress('train', 100, unit='steps', stream=io.StringIO())
    assert 'ETA --:--' in fresh.line(0)


def test_format_seconds():
    assert progress_lib.format_seconds(59) == '00:59'
    assert progress_lib.format_seconds(3600 + 62) == '1:01:02'
