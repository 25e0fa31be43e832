"""``bench decode`` in a tiny mode: it runs, both tools agree; no timing is asserted."""

from __future__ import annotations

import shutil

import pytest

from vtaplab.bench import decode as decode_bench
from vtaplab.bench import pcapgen
from vtaplab.judge import decode


def test_bench_frames_are_the_requested_mix(tmp_path):
    path = tmp_path / "b.pcap"
    assert pcapgen.write_capture(path, pcapgen.bench_frames(3000)) == 3000
    s = decode.decode_capture(path)
    assert s.frames == 3000
    assert sorted(s.vnis) == [100, 101, 102]
    assert s.fragments["reassembled"] > 0 and s.non_vxlan_packets > 0
    assert s.request_count > 10 and s.delivered


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_tiny_bench_runs_and_cross_checks(capsys):
    assert decode_bench.main(["--packets", "2000", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "ratio ours/tshark:" in out and "mix mixed" in out
    assert "cross-check: tshark agrees" in out
    assert decode_bench.main(["--packets", "1500", "--repeat", "1", "--mix", "small"]) == 0
    out = capsys.readouterr().out
    assert "mix small" in out and "0 datagrams reassembled from 0 fragments" in out


def test_bad_count_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        decode_bench.main(["--packets", "0"])
    assert exc.value.code == 2
    assert "accepted: an integer >= 1" in capsys.readouterr().err
