from __future__ import annotations

import importlib
import subprocess
import sys

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


def test_every_command_module_exists_and_has_a_main():
    for name, (module, _help) in cli.COMMANDS.items():
        assert callable(getattr(importlib.import_module(module), "main", None)), name
