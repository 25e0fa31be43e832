"""The documented-behaviour block of ``vtaplab.facts`` the Pulumi program relies on."""

from __future__ import annotations

from vtaplab import facts
from vtaplab.azure.attempts import SCENARIO_ATTEMPTS


def test_every_attempt_has_an_expectation_and_b1_ip_pool_is_unknown() -> None:
    attempts = {a for names in SCENARIO_ATTEMPTS.values() for a in names}
    assert set(facts.ATTEMPT_EXPECTED_ARM_CODES) == attempts
    # No documented code for a PE in an IP-based pool; b1-ilb fronts no PLS, so the PLS code
    # can't be its answer.
    assert facts.ATTEMPT_EXPECTED_ARM_CODES["ip-pool"] is None
    assert facts.ATTEMPT_EXPECTED_ARM_CODES["nic-pool"] == (facts.ARM_MODIFY_PE_NIC,)


def test_create_only_vm_inputs_are_under_os_profile() -> None:
    assert "osProfile.customData" in facts.VM_CREATE_ONLY_INPUTS
    assert all(path.startswith("osProfile.") for path in facts.VM_CREATE_ONLY_INPUTS)
