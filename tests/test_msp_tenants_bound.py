"""Issue 13 item 14: one msp tenant bound (facts.MSP_TENANTS_RANGE) for the stack config
and the emulator's ``--tenants``."""

from __future__ import annotations

import re

import pytest

from vtaplab import PROJECT_ROOT, facts
from vtaplab.emulator import engine
from vtaplab.emulator.netns import Lab, Runner
from vtaplab.emulator.topology import from_graph
from vtaplab.preflight import mocks
from vtaplab.program import config


def test_the_bound_is_the_vtap_budget():
    assert facts.MSP_TENANTS_RANGE[1] == facts.MAX_VTAPS_PER_SUBSCRIPTION
    assert config.MSP_TENANTS_RANGE == (facts.MSP_TENANTS_RANGE[0], facts.MSP_TENANTS_RANGE[1])
    assert config.KEYS_BY_NAME["mspTenants"].default == facts.MSP_TENANTS_DEFAULT


def test_emulate_msp_takes_as_many_tenants_as_the_stack():
    opts = engine._options(["msp", "--tenants", str(facts.MSP_TENANTS_RANGE[1])])
    assert not isinstance(opts, str)
    assert opts.tenants == facts.MSP_TENANTS_RANGE[1]


LOW, HIGH = facts.MSP_TENANTS_RANGE


@pytest.mark.parametrize("bad", [str(LOW - 1), str(HIGH + 1)])
def test_emulate_msp_refuses_outside_the_bound_naming_it(bad):
    with pytest.raises(ValueError, match=rf"--tenants '{bad}'.*accepted: "
                                         rf"{facts.MSP_TENANTS_RANGE[0]}..{facts.MSP_TENANTS_RANGE[1]}"):
        engine._options(["msp", "--tenants", bad])


def test_the_largest_msp_twin_has_valid_interface_names(tmp_path):
    """The twin of an msp stack at the bound: every interface name fits IFNAMSIZ."""
    for name in ("__main__.py", "Pulumi.yaml", "tests"):
        (tmp_path / name).symlink_to(PROJECT_ROOT / name)
    text = (PROJECT_ROOT / "Pulumi.msp.yaml").read_text()
    line = f"  vtaplab:mspTenants: {facts.MSP_TENANTS_RANGE[1]}"
    stack, set_ = re.subn(r"(?m)^  vtaplab:mspTenants:.*$", line, text)
    if not set_:
        stack = stack.rstrip() + "\n" + line + "\n"
    (tmp_path / "Pulumi.msp.yaml").write_text(stack)
    topo = from_graph(mocks.build_graph("msp", root=tmp_path), "msp")
    lab = Lab("vl0000", Runner())
    pairs = [(link.a, link.b) for link in topo.links] + [(p.node, p.fabric) for p in topo.ports]
    for a, b in pairs:
        lab.ifname(a, b)   # raises when longer than IFNAMSIZ
        lab.ifname(b, a)
    [msp] = topo.scenarios
    assert len(msp.flows) == facts.MSP_TENANTS_RANGE[1]
