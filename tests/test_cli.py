from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from vtaplab import cli, facts


def test_unknown_command_names_the_accepted_ones(capsys):
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "'frobnicate'" in err
    for name in cli.COMMANDS:
        assert name in err


def test_module_entry_point_prints_usage():
    out = subprocess.run([sys.executable, "-m", "vtaplab", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "emulate" in out and "decode" in out


def test_v6_sizes_are_recognised():
    assert facts.is_v6_size("Standard_D2s_v6")
    assert facts.is_v6_size("standard_e4as_V6 ")
    assert not facts.is_v6_size("Standard_B2s")
    assert not facts.is_v6_size("Standard_D2s_v5")


def test_every_scenario_has_a_known_expected_outcome():
    for scenario in facts.SCENARIOS.values():
        assert scenario.expected_outcome in (*facts.OUTCOMES, None)
        assert scenario.regions <= facts.VTAP_REGIONS
    assert facts.SCENARIOS["a"].regions == {"centralus"}


def test_commands_stored_in_pulumi_state_go_through_the_dispatcher():
    # pulumi-command keeps these command lines in every deployed stack's state: they must
    # survive a move of the module that implements them.
    for name in ("fastpath", "fetch"):
        out = subprocess.run([sys.executable, "-m", "vtaplab", name, "--help"],
                             capture_output=True, text=True, check=True).stdout
        assert out.startswith(f"usage: python -m vtaplab {name} ")


def _every_command_line() -> list[list[str]]:
    """Every command of the dispatcher, and every subcommand of those that have some."""
    from vtaplab.bench import cli as bench_cli

    lines = [[name] for name in cli.COMMANDS]
    lines += [["bench", what] for what in bench_cli.BENCHES]
    return lines


@pytest.mark.parametrize("words", _every_command_line(), ids=" ".join)
def test_every_command_and_subcommand_answers_help_with_exit_0(words):
    proc = subprocess.run([sys.executable, "-m", "vtaplab", *words, "--help"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.startswith("usage: python -m vtaplab")


def test_an_interrupted_command_exits_130_with_one_line(monkeypatch, capsys):
    import types

    def main(_argv: list[str]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "vtaplab_test_interrupted", types.SimpleNamespace(main=main))
    monkeypatch.setitem(cli.COMMANDS, "interrupted", ("vtaplab_test_interrupted", "test"))
    assert cli.main(["interrupted"]) == cli.EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err
    assert err.strip() == "vtaplab interrupted: interrupted"


def test_a_command_whose_package_is_missing_is_one_line(monkeypatch, capsys):
    # e.g. `python3 -m vtaplab graph b4` outside the venv: pulumi isn't there.
    monkeypatch.setitem(cli.COMMANDS, "needy", ("vtaplab_test_needy", "test"))
    real = cli.importlib.import_module

    def import_module(name: str):
        if name == "vtaplab_test_needy":
            raise ModuleNotFoundError("No module named 'pulumi'", name="pulumi")
        return real(name)

    monkeypatch.setattr(cli.importlib, "import_module", import_module)
    assert cli.main(["needy", "b4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no package 'pulumi'" in err
    assert "venv/bin/python -m vtaplab needy" in err


def test_an_interrupted_emulation_exits_130(monkeypatch, tmp_path, capsys):
    from vtaplab.emulator import engine

    def interrupted(_self: object) -> None:
        raise engine._Interrupted("SIGINT")

    from vtaplab.emulator import runs

    monkeypatch.setenv(runs.STATE_DIR_ENV, str(tmp_path / "state"))   # this run's record only
    monkeypatch.setattr(engine, "list_namespaces", lambda *a: [])
    monkeypatch.setattr(engine.Emulation, "run", interrupted)
    monkeypatch.setattr(engine.Emulation, "teardown", lambda _self: [])
    opts = engine._options(["b2", "--proxy-mode", "netdev", "--out", str(tmp_path)])
    assert not isinstance(opts, str)
    topo, _origin = engine.load_topology(opts)
    assert engine._run_one(opts, topo) == (130, "interrupted")
    assert "interrupted by SIGINT" in capsys.readouterr().err
    assert list((tmp_path / "state").iterdir()) == []   # torn down: its record is gone too
def test_every_command_module_exists_and_has_a_main():
    for name, (module, _help) in cli.COMMANDS.items():
        assert callable(getattr(importlib.import_module(module), "main", None)), name
