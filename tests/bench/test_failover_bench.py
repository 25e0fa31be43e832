"""``bench failover``: its figures come from the verdicts' failover, its ratios from the medians,
bad input is one line. (The runs themselves are the engine's, tested in tests/emulator.)"""

from __future__ import annotations

import pytest

from vtaplab.bench import failover


def _verdict(outcome: str, **failover_: object) -> dict:
    return {"scenario": "b4", "outcome": outcome, "failover": failover_}


def test_a_confined_window_and_one_the_lb_never_closed():
    confined = failover.window_figures(_verdict(
        "delivered", removed_at=2.0, window_s=0.27, lost_in_window=49, lost_after_window=0))
    assert confined == {"window_s": 0.27, "lost_in": 49, "lost_after": 0,
                        "outcome": "delivered"}
    # TCP/22: never taken out, so everything it was sent after the fault is lost "after".
    never = failover.window_figures(_verdict(
        "degraded", removed_at=None, window_s=None, lost_in_window=362,
        lost_after_window=None))
    assert never == {"window_s": None, "lost_in": 0, "lost_after": 362, "outcome": "degraded"}


def test_a_rolling_upgrade_sums_its_windows_and_takes_the_longest():
    got = failover.window_figures(_verdict("degraded", windows=[
        {"removed_at": 1.0, "window_s": 0.6, "lost_in_window": 10, "lost_after_window": 5},
        {"removed_at": 5.0, "window_s": 0.7, "lost_in_window": 20, "lost_after_window": 7}]))
    assert got == {"window_s": 0.7, "lost_in": 30, "lost_after": 12, "outcome": "degraded"}


def test_medians_and_ratios_side_by_side():
    http = failover.summarise([
        {"window_s": 0.2, "lost_in": 40, "lost_after": 0, "outcome": "delivered"},
        {"window_s": 0.3, "lost_in": 60, "lost_after": 0, "outcome": "delivered"},
        {"window_s": 0.4, "lost_in": 50, "lost_after": 0, "outcome": "delivered"}])
    tcp = failover.summarise([
        {"window_s": None, "lost_in": 0, "lost_after": 300, "outcome": "degraded"}] * 3)
    assert http["window_s"] == 0.3 and http["lost_in"] == 50 and tcp["never_out"] == 3
    text = failover.render("b4", "no-proxy-rule", {"http": http, "tcp": tcp})
    assert "tcp/http: window n/a, lost in the windows 0.00, lost after them inf" in text
    assert "delivered x3" in text and "degraded x3" in text


def test_a_verdict_without_a_failover_is_one_line():
    with pytest.raises(failover.BenchError, match="has no failover"):
        failover.window_figures({"scenario": "b2", "outcome": "delivered"})


@pytest.mark.parametrize(("args", "needle"), [
    (["--fault", "meteor"], "--fault 'meteor'"),
    (["--rounds", "0"], "--rounds '0'"),
    (["--requests", "2"], "--requests '2'"),
])
def test_bad_input_is_one_line(args, needle, capsys):
    assert failover.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
