"""``python -m vtaplab evidence STACK [--scenario S]``: run capture + traffic again on a deployed
stack over SSH, fetch the evidence and write the verdict.

It reads the stack's outputs (``pulumi stack output --json -s STACK``, or ``--outputs FILE``
holding that JSON) and takes each traffic scenario's ``run_plan`` — the plan ``pulumi up`` ran
(``vtaplab.azure.run.RunPlan``: the VMs, their pinned host keys, what each captures into which
file, the traffic each client sends, msp's tenants) — and runs it again: capture start on the
collector and the proxies, every client's traffic (msp: one per tenant, all inside the one
capture), capture stop; then ``vtaplab.azure.fetch`` brings the plan's files into
``evidence/<stack>/<scenario>/`` and the verdict is computed from them. Nothing is guessed
from the shape of the outputs: a VM whose host key the plan doesn't pin is refused.

Exit status: 0 when every verdict is what the scenario expects (or the scenario has no
expectation), 1 when a verdict differs or a step failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vtaplab.azure import run as runsteps
from vtaplab.azure.fetch import RemoteFile, fetch_scenario, outputs_summary
from vtaplab.azure.ssh import SshError, SshSession

KEY_FALLBACKS = ("~/.ssh/id_ed25519", "~/.ssh/id_rsa")


class EvidenceError(ValueError):
    """Bad input: one line naming what and what is accepted."""


# --- reading the outputs --------------------------------------------------------------------

def read_outputs(stack: str, outputs_file: Path | None,
                 run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
                 ) -> dict[str, Any]:
    if outputs_file is not None:
        from vtaplab.cli import MAX_OUTPUTS_BYTES, read_text_bounded

        try:
            data = json.loads(read_text_bounded(outputs_file, limit=MAX_OUTPUTS_BYTES,
                                                what="outputs file"))
        except (OSError, ValueError) as exc:   # ValueError: bad JSON, too large, not UTF-8
            raise EvidenceError(f"--outputs {outputs_file}: {exc}; accepted: the JSON of "
                                f"pulumi stack output --json -s {stack}") from None
    else:
        if shutil.which("pulumi") is None:
            raise EvidenceError(
                "the pulumi CLI is not on PATH; accepted: --outputs FILE with the JSON of "
                f"pulumi stack output --json -s {stack} (run where the CLI is)")
        done = run(["pulumi", "stack", "output", "--json", "-s", stack], capture_output=True,
                   text=True, timeout=120, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no message"]
            raise EvidenceError(f"pulumi stack output -s {stack}: {tail[0]}")
        data = json.loads(done.stdout)
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), dict):
        raise EvidenceError(f"stack {stack}: its outputs have no 'scenarios' map; accepted: "
                            "the outputs of this project's program after pulumi up")
    return data


def scenario_plan(outputs: Mapping[str, Any], scenario: str) -> runsteps.RunPlan:
    """The run plan of a traffic scenario, from the stack outputs (its ``run_plan``)."""
    scenarios = outputs["scenarios"]
    if scenario not in scenarios:
        raise EvidenceError(f"--scenario {scenario!r}: not in this stack; accepted: "
                            f"{', '.join(scenarios)}")
    out = scenarios[scenario]
    if not _runs_traffic(out):
        raise EvidenceError(f"scenario {scenario!r} runs no traffic (an ARM attempt or a "
                            "shape this command does not drive); accepted: "
                            + ", ".join(traffic_scenarios(outputs)))
    try:
        return runsteps.RunPlan.from_json(out["run_plan"], f"{scenario}.run_plan")
    except ValueError as exc:
        raise EvidenceError(str(exc)) from None


def _runs_traffic(out: object) -> bool:
    return isinstance(out, dict) and "run_plan" in out


def traffic_scenarios(outputs: Mapping[str, Any]) -> list[str]:
    return [s for s, o in outputs["scenarios"].items() if _runs_traffic(o)]


# --- the run --------------------------------------------------------------------------------

def run_scenario(stack: str, plan: runsteps.RunPlan, *, key: str, port: int = 22,
                 capture_seconds: int = 60, requests: int = 20,
                 connect_seconds: float = 120.0, root: Path | None = None,
                 log: Callable[[str], None] = lambda _line: None) -> dict[str, Any]:
    """Capture, traffic, stop, fetch, verdict, as ``plan`` says, into
    ``evidence/<stack>/<scenario>/``. Returns the fetch's outputs summary."""
    from vtaplab.azure.ssh import SshSession

    everyone = plan.vms
    known = {str(vm.host): str(vm.host_key) for vm in everyone}

    def connect(address: str) -> SshSession:
        user = next(vm.user for vm in everyone if vm.host == address)
        return SshSession(address, username=user, private_key=key, known_hosts=known,
                          port=port, connect_total_seconds=connect_seconds)

    sessions: dict[str, SshSession] = {}

    def session(vm: runsteps.RunVm) -> SshSession:
        if vm.host not in sessions:
            sessions[vm.host] = connect(vm.host).connect()
        return sessions[vm.host]

    scenario = plan.scenario
    started: list[runsteps.RunVm] = []
    try:
        for capture in plan.captures:
            log(f"{scenario}: capture start on {capture.vm.role} ({capture.vm.host})")
            session(capture.vm).run(plan.capture_start(capture, capture_seconds), timeout=60,
                                    check=True)
            started.append(capture.vm)
        for step in plan.traffic:  # one after the other, all inside the one capture
            log(f"{scenario}: {requests} x 2 requests from {step.client.role} to "
                f"{step.target_ip}")
            session(step.client).run(
                plan.traffic_command(step, str(step.target_ip), requests),
                timeout=120 + requests * 2 * (runsteps.TRAFFIC_TIMEOUT + 1), check=True)
    finally:
        for vm in started:  # always, so no capture runs on after a failed step
            log(f"{scenario}: capture stop on {vm.role}")
            session(vm).run(plan.capture_stop(), timeout=60, check=False)
        for s in sessions.values():
            s.close()
    files = [RemoteFile(name, str(vm.host), f"{plan.remote_dir}/{name}")
             for name, vm in plan.files()]
    verdict = fetch_scenario(stack=stack, scenario=scenario, files=files,
                             connect=connect, root=root,
                             tenants=dict(plan.tenants) or None)
    return outputs_summary(verdict, stack=stack)


def _key_file(given: str | None) -> str:
    candidates = [given] if given else list(KEY_FALLBACKS)
    for candidate in candidates:
        path = Path(candidate).expanduser()
        if path.is_file():
            return str(path)
    raise EvidenceError(f"--key-file: none of {', '.join(candidates)} is a file; accepted: "
                        "the private key of the stack's sshPublicKey")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vtaplab evidence",
        description="re-run capture + traffic on a deployed stack over SSH (pinned host "
                    "keys), fetch the evidence and write the verdict")
    parser.add_argument("stack")
    parser.add_argument("--scenario", help="one scenario (default: every traffic scenario)")
    parser.add_argument("--outputs", type=Path,
                        help="the stack outputs as JSON (default: pulumi stack output --json)")
    parser.add_argument("--key-file", help="private key (default ~/.ssh/id_ed25519, id_rsa)")
    parser.add_argument("--port", type=int, default=22, help=argparse.SUPPRESS)
    parser.add_argument("--capture-seconds", type=int, default=60)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--connect-seconds", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    args = parser.parse_args(list(argv))

    try:
        if not 10 <= args.capture_seconds <= 3600:
            raise EvidenceError(f"--capture-seconds {args.capture_seconds}: accepted: 10-3600")
        if not 1 <= args.requests <= 10000:
            raise EvidenceError(f"--requests {args.requests}: accepted: 1-10000")
        outputs = read_outputs(args.stack, args.outputs)
        names = [args.scenario] if args.scenario else traffic_scenarios(outputs)
        if not names:
            raise EvidenceError(f"stack {args.stack}: no scenario that runs traffic")
        plans = [scenario_plan(outputs, name) for name in names]
        key = _key_file(args.key_file)
    except EvidenceError as exc:
        print(f"vtaplab evidence: {exc}", file=sys.stderr)
        return 2
    summaries: list[dict[str, Any]] = []
    failed = False
    for plan in plans:
        try:
            summary = run_scenario(
                args.stack, plan, key=key, port=args.port,
                capture_seconds=args.capture_seconds, requests=args.requests,
                connect_seconds=args.connect_seconds,
                log=lambda line: print(line, file=sys.stderr))
        except SshError as exc:
            print(f"vtaplab evidence: {plan.scenario}: {exc}", file=sys.stderr)
            failed = True
            continue
        summaries.append(summary)
        failed |= summary.get("matches_expected") is False or summary["outcome"] == "error"
        if not args.json:
            expected = {True: "as expected", False: "NOT as expected", None: "no expectation"}
            print(f"{summary['scenario']}: {summary['outcome']} "
                  f"({expected[summary.get('matches_expected')]}) -> {summary['verdict']}"
                  + (f" — {summary['reason']}" if summary.get("reason") else ""))
    if args.json:
        print(json.dumps(summaries, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
