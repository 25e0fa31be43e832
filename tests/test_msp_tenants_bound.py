"""Issue 13 item 14: one msp tenant bound (plan.MSP_TENANTS_MIN..MAX) for the stack config
and the emulator's ``--tenants``."""

from __future__ import annotations

import pytest

from vtaplab import facts, plan
from vtaplab.emulator import engine
from vtaplab.emulator.netns import Lab, Runner
from vtaplab.program import config


def test_the_bound_is_the_vtap_budget():
    assert plan.MSP_TENANTS_MAX == facts.MAX_VTAPS_PER_SUBSCRIPTION
    assert config.MSP_TENANTS_RANGE == (plan.MSP_TENANTS_MIN, plan.MSP_TENANTS_MAX)
    assert engine.MSP_TENANTS == config.MSP_TENANTS_RANGE
    assert config.KEYS_BY_NAME["mspTenants"].default == engine.MSP_DEFAULT_TENANTS


def test_emulate_msp_takes_as_many_tenants_as_the_stack():
    opts = engine._options(["msp", "--tenants", str(plan.MSP_TENANTS_MAX)])
    assert not isinstance(opts, str)
    assert opts.tenants == plan.MSP_TENANTS_MAX


@pytest.mark.parametrize("bad", [str(plan.MSP_TENANTS_MIN - 1), str(plan.MSP_TENANTS_MAX + 1)])
def test_emulate_msp_refuses_outside_the_bound_naming_it(bad):
    with pytest.raises(ValueError, match=rf"--tenants '{bad}'.*accepted: "
                                         rf"{plan.MSP_TENANTS_MIN}..{plan.MSP_TENANTS_MAX}"):
        engine._options(["msp", "--tenants", bad])


def test_the_largest_msp_topology_has_valid_interface_names():
    topo = engine.msp_topology(plan.MSP_TENANTS_MAX)
    lab = Lab("vl0000", Runner())
    for link in topo.links:
        lab.ifname(link.a.node, link.b.node)   # raises when longer than IFNAMSIZ
        lab.ifname(link.b.node, link.a.node)
    assert len({p.vni for p in topo.proxies}) == plan.MSP_TENANTS_MAX
