"""``vtaplab matrix`` against a fake Automation API (no Pulumi CLI, no Azure here).

The fake implements exactly the calls the runner makes — ``create_or_select_stack``,
``ConfigValue``, the ``CommandError`` family (the SDK's own classes), and on the stack
``set_config``, ``preview``, ``up``, ``outputs``, ``destroy`` with ``on_event`` — and feeds
the runner real ``EngineEvent`` objects. Each scenario script says what ``up`` does.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto
from pulumi.automation import events as ev
from pulumi.automation._cmd import CommandResult

from vtaplab import PROJECT_ROOT, facts, matrix

ROOT = PROJECT_ROOT
NOW = dt.datetime(2026, 11, 26, 6, 20, tzinfo=dt.UTC)


def stack_urn(stack: str, typ: str, name: str) -> str:
    return f"urn:pulumi:{stack}::vtaplab::{typ}::{name}"


def step(kind: str, stack: str, typ: str, name: str, seq: int) -> ev.EngineEvent:
    meta = ev.StepEventMetadata(op=ev.OpType.CREATE, urn=stack_urn(stack, typ, name), type=typ,
                                provider="")
    if kind == "pre":
        return ev.EngineEvent(seq, 0, resource_pre_event=ev.ResourcePreEvent(meta))
    if kind == "done":
        return ev.EngineEvent(seq, 0, res_outputs_event=ev.ResOutputsEvent(meta))
    return ev.EngineEvent(seq, 0, res_op_failed_event=ev.ResOpFailedEvent(meta, 1, 1))


def diagnostic(stack: str, name: str, message: str, seq: int) -> ev.EngineEvent:
    return ev.EngineEvent(seq, 0, diagnostic_event=ev.DiagnosticEvent(
        message=message, color="never", severity="error",
        urn=stack_urn(stack, "azure-native:network:VirtualNetworkTap", name)))


def command_error(cls: type[auto.CommandError], stderr: str) -> auto.CommandError:
    return cls(CommandResult(stdout="", stderr=stderr, code=255))


class FakeStack:
    def __init__(self, fake: FakeAuto, name: str, work_dir: str) -> None:
        self.fake, self.name, self.work_dir = fake, name, Path(work_dir)
        self.destroy_failures = fake.destroy_failures

    def _log(self, *call: Any) -> None:
        self.fake.calls.append((self.name, *call))

    def set_config(self, key: str, value: auto.ConfigValue, *, path: bool = False) -> None:
        self._log("set_config", key, value.value)
        # What `pulumi config set` does: rewrite the stack file.
        stack_file = self.work_dir / f"Pulumi.{self.name}.yaml"
        stack_file.write_text(stack_file.read_text() + f"  {key}: {value.value}\n")

    def preview(self, *, on_event: Callable[[ev.EngineEvent], Any]) -> None:
        self._log("preview")
        on_event(step("pre", self.name, "azure-native:resources:ResourceGroup", "rg", 1))

    def up(self, *, on_event: Callable[[ev.EngineEvent], Any]) -> None:
        self._log("up")
        self.fake.config_seen = (self.work_dir / f"Pulumi.{self.name}.yaml").read_text()
        self.fake.up_script(self, on_event)

    def outputs(self) -> dict[str, auto.OutputValue]:
        self._log("outputs")
        return {"resource_group": auto.OutputValue(f"rg-vtaplab-{self.name}", False),
                "key": auto.OutputValue("s3cret", True)}

    def destroy(self, *, on_event: Callable[[ev.EngineEvent], Any]) -> None:
        self._log("destroy")
        if self.destroy_failures:
            self.destroy_failures -= 1
            raise command_error(auto.ConcurrentUpdateError,
                                "error: the stack is currently locked by 1 lock(s)")
        on_event(ev.EngineEvent(9, 0, summary_event=ev.SummaryEvent(
            maybe_corrupt=False, duration_seconds=3,
            resource_changes={ev.OpType.DELETE: 12}, policy_packs={})))


class FakeAuto:
    """The slice of ``pulumi.automation`` the runner uses."""

    CommandError = auto.CommandError
    ConfigValue = auto.ConfigValue

    def __init__(self, up_script: Callable[[FakeStack, Callable], None], *,
                 destroy_failures: int = 0, select_error: BaseException | None = None) -> None:
        self.up_script = up_script
        self.destroy_failures = destroy_failures
        self.select_error = select_error
        self.calls: list[tuple[Any, ...]] = []
        self.config_seen = ""

    def create_or_select_stack(self, *, stack_name: str, work_dir: str) -> FakeStack:
        self.calls.append((stack_name, "create_or_select_stack", work_dir))
        if self.select_error is not None:
            raise self.select_error
        return FakeStack(self, stack_name, work_dir)

    def ops(self, stack: str) -> list[str]:
        return [c[1] for c in self.calls if c[0] == stack]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    for name in ("Pulumi.yaml", "Pulumi.r1.yaml", "Pulumi.b2.yaml", "Pulumi.uksouth.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def write_program_verdict(stack: FakeStack, scenario: str, outcome: str,
                          code: str | None = None) -> None:
    """What the program's RejectedAttempt does during up: a verdict in the evidence dir."""
    from vtaplab.judge.verdict import verdict_from_summary, write_verdict

    out = stack.work_dir / "evidence" / stack.name / scenario
    arm = {"code": code, "message": "from ARM"} if code else None
    verdict = verdict_from_summary(scenario=scenario, summary=None,
                                   files=[out / "arm-response.json"], arm_error=arm)
    if outcome == "accepted":
        assert verdict["outcome"] == "accepted"
    write_verdict(out, verdict)


def run(fake: FakeAuto, root: Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    rc = matrix.main(list(argv), auto=fake, root=root, out=out, retry_delay=0)
    return rc, out.getvalue()


def verdict_of(root: Path, stack: str, scenario: str) -> dict[str, Any]:
    return json.loads((root / "evidence" / stack / scenario / "verdict.json").read_text())


# --------------------------------------------------------------------------- the runs


def test_success_runs_every_step_in_order_and_destroys(root):
    def up(stack: FakeStack, on_event: Callable) -> None:
        on_event(step("pre", stack.name, "azure-native:network:VirtualNetwork", "r1-vnet", 2))
        on_event(step("done", stack.name, "azure-native:network:VirtualNetwork", "r1-vnet", 3))
        write_program_verdict(stack, "r1", "rejected", facts.ARM_PE_AS_VTAP_DESTINATION)

    fake = FakeAuto(up)
    original = (root / "Pulumi.r1.yaml").read_text()
    rc, out = run(fake, root, "--stacks", "r1")
    assert rc == 0, out
    assert fake.ops("r1") == ["create_or_select_stack", "set_config", "preview", "up",
                              "outputs", "destroy"]
    assert fake.calls[0][2] == str(root)  # work_dir: the committed stack file is the config
    key, value = fake.calls[1][2], fake.calls[1][3]
    assert key == "vtaplab:expiresOn" and value.endswith("Z")
    assert "vtaplab:expiresOn" in fake.config_seen  # set while up ran ...
    assert (root / "Pulumi.r1.yaml").read_text() == original  # ... and the file put back
    assert "[r1 up] create   azure-native:network:VirtualNetwork r1-vnet ok" in out
    assert "[r1 destroy#1] summary: delete 12" in out
    v = verdict_of(root, "r1", "r1")
    assert (v["outcome"], v["matches_expected"], v["label"]) == (
        "rejected", True, "measured on Azure")
    run_json = json.loads((root / "evidence/r1/matrix/run.json").read_text())
    assert run_json["destroyed"] is True and run_json["outputs"]["key"] == "[secret]"
    results = (root / "evidence" / "RESULTS.md").read_text()
    assert "| **r1** |" in results and "measured on Azure" in results


def test_keep_skips_the_destroy(root):
    fake = FakeAuto(lambda s, e: write_program_verdict(s, "r1", "rejected",
                                                       facts.ARM_PE_AS_VTAP_DESTINATION))
    rc, _ = run(fake, root, "--stacks", "r1", "--keep")
    assert rc == 0 and "destroy" not in fake.ops("r1")


def test_failed_up_with_an_arm_diagnostic_becomes_the_scenarios_rejection(root):
    message = ('error: creating VirtualNetworkTap: PUT https://management.azure.com/...: '
               f'Status=400 Code="{facts.ARM_PE_AS_VTAP_DESTINATION}" '
               'Message="Private endpoint NIC cannot be the destination"')

    def up(stack: FakeStack, on_event: Callable) -> None:
        on_event(step("pre", stack.name, "azure-native:network:VirtualNetworkTap", "r1-vtap", 2))
        on_event(diagnostic(stack.name, "r1-vtap", message, 3))
        on_event(step("failed", stack.name, "azure-native:network:VirtualNetworkTap", "r1-vtap",
                      4))
        raise command_error(auto.CommandError, "error: update failed")

    fake = FakeAuto(up)
    rc, out = run(fake, root, "--stacks", "r1")
    assert rc == 0, out  # the rejection r1 expects: no platform change
    assert fake.ops("r1")[-1] == "destroy"
    v = verdict_of(root, "r1", "r1")
    assert v["outcome"] == "rejected" and v["matches_expected"] is True
    assert v["arm_error"]["code"] == facts.ARM_PE_AS_VTAP_DESTINATION
    assert v["arm_error"]["message"] == "Private endpoint NIC cannot be the destination"
    assert v["run_error"] == {"kind": "CommandError", "phase": "up"}
    assert "[r1 up] FAILED   azure-native:network:VirtualNetworkTap r1-vtap" in out
    events = (root / "evidence/r1/matrix/events.jsonl").read_text()
    assert facts.ARM_PE_AS_VTAP_DESTINATION in events  # the error kept as evidence
    assert "evidence/r1/matrix/events.jsonl" in " ".join(v["files"])


def test_an_unrelated_arm_error_is_an_error_not_a_finding(root):
    def up(stack: FakeStack, on_event: Callable) -> None:
        on_event(diagnostic(stack.name, "provider-col-vm",
                            'Code="SkuNotAvailable" Message="Standard_B2s is not available"', 2))
        raise command_error(auto.CommandError, "error: update failed")

    rc, out = run(FakeAuto(up), root, "--stacks", "b2")
    assert rc == 3, out  # nothing measured: not a platform change, not a pass
    v = verdict_of(root, "b2", "b2")
    assert v["outcome"] == "error" and v["matches_expected"] is None
    assert [e["code"] for e in v["arm_errors"]] == ["SkuNotAvailable"]


def test_a_changed_platform_answer_exits_1_and_says_what_changed(root):
    # Azure starts accepting a PE NIC as vTAP destination: r1's attempt is accepted.
    fake = FakeAuto(lambda s, e: write_program_verdict(s, "r1", "accepted"))
    rc, out = run(fake, root, "--stacks", "r1")
    assert rc == 1, out
    assert "CHANGED" in out and "r1 (measured on Azure, stack r1): expected rejected, got " \
        "accepted" in out


def test_concurrent_update_is_recorded_and_the_stack_still_destroyed(root):
    def up(stack: FakeStack, on_event: Callable) -> None:
        raise command_error(auto.ConcurrentUpdateError,
                            "error: [409] Conflict: Another update is currently in progress.")

    fake = FakeAuto(up)
    rc, out = run(fake, root, "--stacks", "b2")
    assert rc == 3, out
    assert fake.ops("b2")[-1] == "destroy"
    v = verdict_of(root, "b2", "b2")
    assert v["outcome"] == "error"
    assert v["reason"].startswith("ConcurrentUpdateError during up: ")
    assert v["run_error"]["kind"] == "ConcurrentUpdateError"


def test_stack_not_found_before_anything_exists_destroys_nothing(root):
    fake = FakeAuto(lambda s, e: None,
                    select_error=command_error(auto.StackNotFoundError, "no stack named b2 found"))
    rc, _ = run(fake, root, "--stacks", "b2")
    assert rc == 3
    assert fake.ops("b2") == ["create_or_select_stack"]
    assert verdict_of(root, "b2", "b2")["reason"].startswith("StackNotFoundError during select")


def run_r1_with_failing_destroys(root: Path, failures: int) -> tuple[int, str]:
    """r1 rejected as the program says, its destroy failing ``failures`` times: the matrix
    tries the destroy twice whatever happens (one retry, no more)."""
    fake = FakeAuto(lambda s, e: write_program_verdict(s, "r1", "rejected",
                                                       facts.ARM_PE_AS_VTAP_DESTINATION),
                    destroy_failures=failures)
    rc, out = run(fake, root, "--stacks", "r1")
    assert fake.ops("r1").count("destroy") == 2
    return rc, out


def test_a_destroy_that_fails_once_is_retried(root):
    rc, out = run_r1_with_failing_destroys(root, 1)
    assert rc == 0, out
    assert "destroy attempt 1 failed: ConcurrentUpdateError" in out
    assert json.loads((root / "evidence/r1/matrix/run.json").read_text())["destroyed"] is True


def test_a_destroy_that_fails_twice_says_resources_may_be_left(root):
    rc, out = run_r1_with_failing_destroys(root, 2)
    assert rc == 3, out
    assert "RESOURCES MAY BE LEFT: run 'pulumi destroy -s r1'" in out
    assert len(verdict_of(root, "r1", "r1")["destroy_errors"]) == 2


def test_ctrl_c_during_up_still_destroys_and_stops_the_matrix(root):
    def up(stack: FakeStack, on_event: Callable) -> None:
        on_event(step("pre", stack.name, "azure-native:network:VirtualNetwork", "r1-vnet", 2))
        raise KeyboardInterrupt

    fake = FakeAuto(up)
    original = (root / "Pulumi.r1.yaml").read_text()
    rc, out = run(fake, root, "--stacks", "r1,b2")
    assert rc == 130, out
    assert fake.ops("r1")[-1] == "destroy"
    assert fake.ops("b2") == []  # the next stack never starts
    assert (root / "Pulumi.r1.yaml").read_text() == original
    v = verdict_of(root, "r1", "r1")
    assert v["outcome"] == "error" and v["reason"].startswith("interrupted during up")


def test_a_stale_verdict_from_an_earlier_run_is_not_this_runs(root):
    old = root / "evidence" / "r1" / "r1"
    from vtaplab.judge.verdict import verdict_from_summary, write_verdict

    write_verdict(old, verdict_from_summary(scenario="r1", summary=None, files=[],
                                            arm_error={"code": facts.ARM_PE_AS_VTAP_DESTINATION}))
    import os
    os.utime(old / "verdict.json", (1_000_000, 1_000_000))
    rc, _ = run(FakeAuto(lambda s, e: None), root, "--stacks", "r1")
    assert rc == 3
    assert verdict_of(root, "r1", "r1")["outcome"] == "error"


def test_bad_input_is_one_line(root, capsys):
    rc, _ = run(FakeAuto(lambda s, e: None), root, "--stacks", "nope")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "accepted:" in err


# --------------------------------------------------------------------------- pieces


@pytest.mark.parametrize("text, code, message", [
    (f'Status=400 Code="{facts.ARM_MODIFY_PE_NIC}" Message="NIC is read-only"',
     facts.ARM_MODIFY_PE_NIC, "NIC is read-only"),
    ("RESPONSE 400: 400 Bad Request\nERROR CODE: InvalidResourceReference\n---",
     "InvalidResourceReference", None),
    ('{"error": {"code": "QuotaExceeded", "message": "cores"}}', "QuotaExceeded", "cores"),
])
def test_arm_errors_in_provider_messages(text, code, message):
    found = matrix.arm_errors_in(text)
    assert [e["code"] for e in found] == [code]
    if message:
        assert found[0]["message"] == message


def test_no_arm_code_in_plain_text():
    assert matrix.arm_errors_in("error: connection reset by peer") == []


def test_expires_on_rounds_up_to_the_hour():
    assert matrix.expires_on(NOW) == "2026-11-26T15:00Z"
    assert matrix.expires_on(NOW.replace(minute=0)) == "2026-11-26T14:00Z"


def test_errors_are_attributed_by_resource_name_then_code():
    scenarios = ("r1", "b1", "b2")
    assert matrix.scenario_of(stack_urn("x", "t", "b1-ilb"), None, scenarios) == "b1"
    assert matrix.scenario_of(stack_urn("x", "t", "provider-pls"), facts.ARM_MODIFY_PE_NIC,
                              scenarios) == "b1"
    assert matrix.scenario_of(stack_urn("x", "t", "provider-pls"), "Other", scenarios) is None


def test_no_verdict_after_up_runs_the_evidence_step_with_the_outputs(root):
    from vtaplab.judge.verdict import verdict_from_summary, write_verdict

    seen: list[tuple[str, dict]] = []

    def collect(stack: str, where: Path, outputs_file: Path) -> None:
        outputs = json.loads(outputs_file.read_text())
        seen.append((stack, outputs))
        out = where / "evidence" / stack / "b2"
        v = verdict_from_summary(scenario="b2", summary=None, files=[out / "collector.pcap"])
        write_verdict(out, v)  # no capture arrived: not-delivered

    runner = matrix.AzureMatrix(auto=FakeAuto(lambda s, e: None), root=root, out=io.StringIO(),
                                now=lambda: NOW, collect_evidence=collect, retry_delay=0)
    result = runner.run_stack("b2", ["b2"])
    assert seen == [("b2", {"resource_group": "rg-vtaplab-b2", "key": "[secret]"})]
    assert result.destroyed is True
    v = verdict_of(root, "b2", "b2")
    assert (v["outcome"], v["matches_expected"], v["label"]) == (
        "not-delivered", False, "measured on Azure")
    set_config = next(c for c in runner.auto.calls if c[1] == "set_config")
    assert set_config[3] == "2026-11-26T15:00Z"  # NOW + 8 h, rounded up


def test_sigterm_during_up_is_handled_like_ctrl_c(root):
    import os
    import signal

    def up(stack: FakeStack, on_event: Callable) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # a cancelled CI job
        raise AssertionError("SIGTERM did not interrupt the run")

    fake = FakeAuto(up)
    before = signal.getsignal(signal.SIGTERM)
    rc, out = run(fake, root, "--stacks", "r1")
    assert rc == 130, out
    assert fake.ops("r1")[-1] == "destroy"
    assert signal.getsignal(signal.SIGTERM) == before  # handler restored


def test_without_the_pulumi_cli_says_so_before_anything(root, monkeypatch, capsys):
    monkeypatch.setattr(matrix.shutil, "which", lambda name: None)
    rc = matrix.main(["--stacks", "r1"], root=root, out=io.StringIO())  # the real API
    err = capsys.readouterr().err
    assert rc == 2 and "the Pulumi CLI is not installed" in err and "--offline" in err
    assert not (root / "evidence").exists()


def test_offline_without_root_is_one_line(root, monkeypatch, capsys):
    monkeypatch.setattr(matrix.os, "geteuid", lambda: 1000)
    rc = matrix.main(["--offline", "--stacks", "b2"], root=root, out=io.StringIO())
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "needs root" in err


# --------------------------------------------------------------------------- doctor first


def _doctor(status: str, seen: list[str]) -> Callable[[str, Path], list[Any]]:
    from vtaplab.azure.doctor import Check

    def check(stack: str, root: Path) -> list[Any]:
        seen.append(stack)
        return [Check("provider Microsoft.DevTestLab", status, "NotRegistered",
                      "az provider register --namespace Microsoft.DevTestLab")]
    return check


def test_doctor_runs_first_and_a_missing_prerequisite_stops_before_anything(root, capsys):
    fake = FakeAuto(lambda s, e: None)
    seen: list[str] = []
    out = io.StringIO()
    rc = matrix.main(["--stacks", "r1"], auto=fake, root=root, out=out, retry_delay=0,
                     doctor=_doctor("missing", seen))
    err = capsys.readouterr().err
    assert rc == 2 and seen == ["r1"]
    assert fake.calls == []  # no stack selected, nothing deployed
    assert err.count("\n") == 1 and "az provider register --namespace Microsoft.DevTestLab" in err
    assert "missing  provider Microsoft.DevTestLab" in out.getvalue()


def test_an_unknown_doctor_check_is_shown_and_the_run_goes_on(root):
    fake = FakeAuto(lambda s, e: write_program_verdict(s, "r1", "rejected",
                                                       facts.ARM_PE_AS_VTAP_DESTINATION))
    seen: list[str] = []
    out = io.StringIO()
    rc = matrix.main(["--stacks", "r1"], auto=fake, root=root, out=out, retry_delay=0,
                     doctor=_doctor("unknown", seen))
    assert rc == 0 and seen == ["r1"] and "up" in fake.ops("r1")
    assert "unknown  provider Microsoft.DevTestLab" in out.getvalue()


def test_skip_doctor(root):
    fake = FakeAuto(lambda s, e: write_program_verdict(s, "r1", "rejected",
                                                       facts.ARM_PE_AS_VTAP_DESTINATION))
    seen: list[str] = []
    rc = matrix.main(["--stacks", "r1", "--skip-doctor"], auto=fake, root=root,
                     out=io.StringIO(), retry_delay=0, doctor=_doctor("missing", seen))
    assert rc == 0 and seen == []
