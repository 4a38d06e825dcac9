from pathlib import Path

import pytest

from benchmarks import procstat

# Field 2 holds spaces and parentheses; utime is 1234 and stime 56.
STAT = (
    "4242 (python (x) y) S 1 4242 4242 0 -1 4194560 12345 0 0 0 1234 56 0 0 20 0 "
    "3 0 987654 123456789 4321 18446744073709551615 1 1 0 0 0 0 0 16781312 17922 0 0 0 "
    "17 1 0 0 0 0 0\n"
)


def test_parse_stat_counts_fields_after_the_command_name() -> None:
    assert procstat.parse_stat(STAT) == (1234, 56)


def test_parse_stat_of_this_process() -> None:
    utime, stime = procstat.parse_stat(Path("/proc/self/stat").read_text())
    assert utime >= 0
    assert stime >= 0


def fake_proc(tmp_path: Path, pid: int, utime: int, stime: int) -> None:
    (tmp_path / str(pid)).mkdir(exist_ok=True)
    fields = STAT.replace(" 1234 56 ", f" {utime} {stime} ")
    (tmp_path / str(pid) / "stat").write_text(fields)


def test_cpu_seconds_snapshot_and_used(tmp_path: Path) -> None:
    ticks = procstat.CLOCK_TICKS
    fake_proc(tmp_path, 10, utime=ticks, stime=ticks)
    fake_proc(tmp_path, 11, utime=0, stime=ticks // 2)
    assert procstat.cpu_seconds(10, tmp_path) == pytest.approx(2.0)
    before = procstat.snapshot([10, 11, 12], tmp_path)
    assert before == pytest.approx({10: 2.0, 11: 0.5})
    fake_proc(tmp_path, 10, utime=3 * ticks, stime=ticks)
    (tmp_path / "11" / "stat").unlink()
    after = procstat.snapshot([10, 11], tmp_path)
    assert procstat.used(before, after) == pytest.approx(2.0)
