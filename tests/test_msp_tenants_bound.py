"""Issue 13 item 14: one msp tenant bound (plan.MSP_TENANTS_MIN..MAX) for the stack config
and the emulator's ``--tenants``."""

from __future__ import annotations

import re

import pytest

from vtaplab import PROJECT_ROOT, facts, plan
from vtaplab.emulator import engine
from vtaplab.emulator.netns import Lab, Runner
from vtaplab.emulator.topology import from_graph
from vtaplab.preflight import graph as mocks
from vtaplab.program import config


def test_the_bound_is_the_vtap_budget():
    assert plan.MSP_TENANTS_MAX == facts.MAX_VTAPS_PER_SUBSCRIPTION
    assert config.MSP_TENANTS_RANGE == (plan.MSP_TENANTS_MIN, plan.MSP_TENANTS_MAX)
    assert config.KEYS_BY_NAME["mspTenants"].default == plan.MSP_TENANTS_DEFAULT


def test_emulate_msp_takes_as_many_tenants_as_the_stack():
    opts = engine._options(["msp", "--tenants", str(plan.MSP_TENANTS_MAX)])
    assert not isinstance(opts, str)
    assert opts.tenants == plan.MSP_TENANTS_MAX


@pytest.mark.parametrize("bad", [str(plan.MSP_TENANTS_MIN - 1), str(plan.MSP_TENANTS_MAX + 1)])
def test_emulate_msp_refuses_outside_the_bound_naming_it(bad):
    with pytest.raises(ValueError, match=rf"--tenants '{bad}'.*accepted: "
                                         rf"{plan.MSP_TENANTS_MIN}..{plan.MSP_TENANTS_MAX}"):
        engine._options(["msp", "--tenants", bad])


def test_the_largest_msp_twin_has_valid_interface_names(tmp_path):
    """The twin of an msp stack at the bound: every interface name fits IFNAMSIZ."""
    for name in ("__main__.py", "Pulumi.yaml", "tests"):
        (tmp_path / name).symlink_to(PROJECT_ROOT / name)
    text = (PROJECT_ROOT / "Pulumi.msp.yaml").read_text()
    line = f"  vtaplab:mspTenants: {plan.MSP_TENANTS_MAX}"
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
    assert len(msp.flows) == plan.MSP_TENANTS_MAX
