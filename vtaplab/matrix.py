"""``python -m vtaplab matrix``: run the scenario matrix, write evidence/RESULTS.md, watch Azure.

On Azure (the default), first ``vtaplab doctor`` for every stack (a missing provider, feature,
quota or vTAP slot stops the matrix before anything is created; ``--skip-doctor`` to skip it),
then per stack through Pulumi's Automation API: ``create_or_select_stack``
with ``work_dir`` = the project root (so the committed ``Pulumi.<stack>.yaml`` is the config),
``vtaplab:expiresOn`` set for the run (the stack file is restored right after ``up``: the
committed file never changes), preview, up — each with a live progress line per resource from
the engine events — the outputs, then the scenarios' verdicts, and ``destroy`` in ``finally``
unless ``--keep`` (retried once, 30 s later; Ctrl-C or SIGTERM during the run still destroy).
If the program's own run (its attempts, its evidence steps) left no verdict for a traffic
scenario, ``python -m vtaplab evidence STACK`` is run with the stack's outputs. A failure
becomes a verdict with the error kept as evidence (``evidence/<stack>/matrix/``): the
``CommandError`` kind (``ConcurrentUpdateError``, ``StackNotFoundError``, ...), and ARM's
codes found in the engine's diagnostic events — an expected code (r1, b1) is that
scenario's ``rejected``.

``--offline`` needs no Azure (but root, for the emulator): the data-path scenarios (b2, b3 and
b3 with one proxy down, msp) are run by the emulator (``python -m vtaplab emulate``) into
``evidence/offline/<scenario>/``; the control-plane ones are predicted by the preflight rules
(``vtaplab.preflight.check``) on the program's graph: r1 and b1 (with the attempts the program
makes), c1
(a vTAP pointed at an Azure Firewall: rule VTAP002 says no vTAP can express it), and a (the
rules on stack a's graph; whether Direct Connect carries vTAP's VXLAN is ``unknown`` until it
is measured — the emulator's b2 is not a model of it). Every row says how it was obtained.

Exit status (the platform-change watch): 0 every outcome as expected; 1 an outcome differs from
the expected one or from the previous run's (what changed is printed); 3 something could not
be measured or a destroy failed (resources may be left); 130 interrupted; 2 bad input or a
subscription doctor found not ready.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from vtaplab import PROJECT_ROOT, arm_ids, facts

DEFAULT_STACKS = ("uksouth",)
EXPIRES_KEY = "vtaplab:expiresOn"
# The fixed rule for the expires-on tag: the run's start plus this, rounded up to the hour.
EXPIRY_HOURS = 8
EMULATED = ("b2", "b3", "msp", "b4")
# Runs of the emulator a scenario must also survive, each a variant of its verdict (the worst
# run decides): b3 one proxy stopped; b4 one instance's rewrite gone, then a rolling upgrade.
VARIANTS: dict[str, tuple[str, ...]] = {"b3": ("proxy-down",),
                                        "b4": ("no-proxy-rule", "rolling-upgrade")}
PREDICTED = ("r1", "b1", "a", "c1")
# Scenarios the program builds but the twin doesn't yet: --offline leaves them out rather than
# guess a verdict (none today; the place a new scenario waits until the twin runs it).
OFFLINE_PENDING: tuple[str, ...] = ()
LABEL_AZURE, LABEL_EMULATED, LABEL_PREDICTED = "measured on Azure", "emulated", "predicted"
EMULATE_TIMEOUT_S = 300
EVIDENCE_TIMEOUT_S = 3600

# ARM error codes in engine output, in the forms the azure-native provider prints them.
_ARM_CODE_PATTERNS = (
    re.compile(r'Code="(?P<code>[A-Za-z][A-Za-z0-9_.]*)"'
               r'(?:\s+Message="(?P<message>(?:[^"\\]|\\.)*)")?'),
    re.compile(r"ERROR CODE:\s*(?P<code>[A-Za-z][A-Za-z0-9_.]*)"),
    re.compile(r'"code"\s*:\s*"(?P<code>[A-Za-z][A-Za-z0-9_.]*)"'
               r'(?:\s*,\s*"message"\s*:\s*"(?P<message>(?:[^"\\]|\\.)*)")?'),
)


def arm_errors_in(text: str) -> list[dict[str, str]]:
    """ARM ``{code, message}`` pairs in a diagnostic message, first occurrence per code."""
    found: dict[str, str] = {}
    for pattern in _ARM_CODE_PATTERNS:
        for match in pattern.finditer(text):
            code = match.group("code")
            message = (match.groupdict().get("message") or "").replace('\\"', '"')
            if code not in found or (message and not found[code]):
                found[code] = message
    return [{"code": c, "message": m or text.strip()[:500]} for c, m in found.items()]


def expires_on(now: dt.datetime, hours: int = EXPIRY_HOURS) -> str:
    """``now + hours``, rounded up to the whole hour, UTC: ``2026-11-26T15:00Z``."""
    end = now.astimezone(dt.UTC) + dt.timedelta(hours=hours)
    if end.minute or end.second or end.microsecond:
        end = end.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    return end.strftime("%Y-%m-%dT%H:%MZ")


def _urn_name(urn: str | None) -> str:
    return (urn or "").rsplit("::", 1)[-1]


def scenario_of(urn: str | None, code: str | None, scenarios: Sequence[str]) -> str | None:
    """Which of the stack's scenarios an engine error belongs to: by the resource's name
    (every scenario's resources are named ``<scenario>-...``), else by an expected ARM code."""
    name = _urn_name(urn)
    for s in scenarios:
        if name == s or name.startswith(f"{s}-"):
            return s
    for s in scenarios:
        if code and code in facts.SCENARIOS[s].expected_arm_codes:
            return s
    return None


# --------------------------------------------------------------------------- progress


class Progress:
    """The live display of one stack's phase, from Automation API engine events: a line per
    resource step as it starts and ends, warnings and errors as they come, the summary."""

    def __init__(self, stack: str, phase: str, out: TextIO, records: list[dict[str, Any]]) -> None:
        self.stack, self.phase, self.out, self.records = stack, phase, out, records
        self.started: dict[str, float] = {}
        self.done = 0
        self.failed = 0

    def _print(self, text: str) -> None:
        print(f"[{self.stack} {self.phase}] {text}", file=self.out, flush=True)

    def __call__(self, event: Any) -> None:
        record: dict[str, Any] = {"phase": self.phase, "sequence": getattr(event, "sequence", None)}
        pre = getattr(event, "resource_pre_event", None)
        outs = getattr(event, "res_outputs_event", None)
        failed = getattr(event, "res_op_failed_event", None)
        diag = getattr(event, "diagnostic_event", None)
        summary = getattr(event, "summary_event", None)
        if pre is not None:
            meta = pre.metadata
            self.started[meta.urn] = time.monotonic()
            record.update(kind="pre", op=_op(meta.op), urn=meta.urn, type=meta.type)
            if _op(meta.op) != "same":
                self._print(f"{_op(meta.op):<8} {meta.type} {_urn_name(meta.urn)} ...")
        elif outs is not None:
            meta = outs.metadata
            took = time.monotonic() - self.started.pop(meta.urn, time.monotonic())
            self.done += 1
            record.update(kind="done", op=_op(meta.op), urn=meta.urn, type=meta.type)
            if _op(meta.op) != "same":
                self._print(f"{_op(meta.op):<8} {meta.type} {_urn_name(meta.urn)} ok "
                            f"({took:.0f}s; {self.done} done)")
        elif failed is not None:
            meta = failed.metadata
            self.failed += 1
            record.update(kind="failed", op=_op(meta.op), urn=meta.urn, type=meta.type)
            self._print(f"FAILED   {meta.type} {_urn_name(meta.urn)}")
        elif diag is not None:
            record.update(kind="diagnostic", severity=diag.severity, urn=diag.urn,
                          message=diag.message)
            if diag.severity in ("warning", "error"):
                first = diag.message.strip().splitlines()[0] if diag.message.strip() else ""
                self._print(f"{diag.severity}: {_urn_name(diag.urn) or '-'}: {first[:160]}")
        elif summary is not None:
            changes = {_op(k): v for k, v in (summary.resource_changes or {}).items()}
            record.update(kind="summary", changes=changes,
                          duration_seconds=summary.duration_seconds)
            self._print("summary: " + (", ".join(f"{k} {v}" for k, v in changes.items())
                                       or "no changes")
                        + f" in {summary.duration_seconds}s")
        else:
            return
        self.records.append(record)


def _op(op: Any) -> str:
    return str(getattr(op, "value", op))


# --------------------------------------------------------------------------- one stack on Azure


@dataclass
class StackResult:
    stack: str
    scenarios: tuple[str, ...]
    started: float
    phase: str = "select"
    error: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    destroyed: bool | None = None          # None: --keep (or nothing to destroy)
    destroy_errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[Path] = field(default_factory=list)

    def arm_errors(self) -> list[dict[str, Any]]:
        """ARM errors in this run's error diagnostics, each with the urn it was about."""
        out: list[dict[str, Any]] = []
        for r in self.records:
            if r.get("kind") == "diagnostic" and r.get("severity") == "error":
                for err in arm_errors_in(str(r.get("message") or "")):
                    if not any(e["code"] == err["code"] and e["urn"] == r.get("urn")
                               for e in out):
                        out.append({**err, "urn": r.get("urn"), "phase": r.get("phase")})
        if self.error:
            for err in arm_errors_in(self.error.get("message", "")):
                if not any(e["code"] == err["code"] for e in out):
                    out.append({**err, "urn": None, "phase": self.error.get("phase")})
        return out


@contextmanager
def _signal_handlers(handlers: Mapping[int, Any]) -> Iterator[None]:
    """Install ``handlers`` (signal -> handler) for the block and put the previous ones back
    after it. Python only lets the main thread set handlers: elsewhere the block runs with
    the handlers as they are, rather than failing."""
    try:
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _sigint_ignored() -> AbstractContextManager[None]:
    """A second Ctrl-C (or a CI runner's SIGTERM) must not skip the destroy; the Pulumi CLI
    gets its own signal from the terminal and cancels on its side."""
    return _signal_handlers({signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_IGN})


def _sigterm_interrupts() -> AbstractContextManager[None]:
    """SIGTERM (a cancelled CI job) stops the run like Ctrl-C: the destroy still runs."""
    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    return _signal_handlers({signal.SIGTERM: handler})


class AzureMatrix:
    """Drives stacks through ``auto`` — ``pulumi.automation`` or a test's fake providing the
    same calls: ``create_or_select_stack(stack_name=, work_dir=)``, ``ConfigValue(value=)``,
    the error classes, and on the stack ``set_config``, ``preview``, ``up``, ``outputs``,
    ``destroy`` (each with ``on_event``)."""

    def __init__(self, *, auto: Any = None, root: Path = PROJECT_ROOT, evidence: Path | None = None,
                 keep: bool = False, out: TextIO | None = None,
                 now: Callable[[], dt.datetime] | None = None,
                 collect_evidence: Callable[[str, Path, Path], None] | None = None,
                 retry_delay: float = 30.0) -> None:
        if auto is None:
            import pulumi.automation as auto_module

            auto = auto_module
        self.auto = auto
        self.root = Path(root)
        self.evidence = Path(evidence) if evidence is not None else self.root / "evidence"
        self.keep = keep
        self.out = out or sys.stdout
        self.now = now or (lambda: dt.datetime.now(dt.UTC))
        self.collect_evidence = collect_evidence or _run_evidence_command
        # Before the second destroy: an interrupted CLI may still hold the stack's lock.
        self.retry_delay = retry_delay

    def _command_error(self) -> type[BaseException]:
        return self.auto.CommandError

    def run_stack(self, stack: str, scenarios: Sequence[str]) -> StackResult:
        result = StackResult(stack, tuple(scenarios), time.time())
        stack_file = self.root / f"Pulumi.{stack}.yaml"
        original = stack_file.read_bytes() if stack_file.is_file() else None
        handle: Any = None
        print(f"[{stack}] scenarios {', '.join(scenarios)}; "
              f"{'kept after the run' if self.keep else 'destroyed after the run'}",
              file=self.out, flush=True)
        try:
            handle = self.auto.create_or_select_stack(stack_name=stack, work_dir=str(self.root))
            result.phase = "config"
            handle.set_config(EXPIRES_KEY, self.auto.ConfigValue(value=expires_on(self.now())))
            result.phase = "preview"
            handle.preview(on_event=Progress(stack, "preview", self.out, result.records))
            result.phase = "up"
            handle.up(on_event=Progress(stack, "up", self.out, result.records))
            _restore(stack_file, original)
            result.phase = "outputs"
            result.outputs = {k: ("[secret]" if getattr(v, "secret", False) else v.value)
                              for k, v in handle.outputs().items()}
            result.phase = "evidence"
            missing = [s for s in scenarios if facts.SCENARIOS[s].carries_traffic
                       and self._fresh_verdict(stack, s, result) is None]
            if missing:
                # The program's own run left no verdict: `vtaplab evidence` runs capture and
                # traffic again over SSH, from these outputs.
                outputs_file = self._dir(stack) / "outputs.json"
                outputs_file.parent.mkdir(parents=True, exist_ok=True)
                outputs_file.write_text(json.dumps(result.outputs, indent=2, default=str) + "\n",
                                        encoding="utf-8")
                self.collect_evidence(stack, self.root, outputs_file)
            result.phase = "done"
        except KeyboardInterrupt:
            result.interrupted = True
            print(f"[{stack}] interrupted during {result.phase}", file=self.out, flush=True)
        except self._command_error() as exc:
            result.error = {"kind": getattr(exc, "name", type(exc).__name__),
                            "phase": result.phase, "message": str(exc)[-8000:]}
            print(f"[{stack}] {result.error['kind']} during {result.phase}: "
                  f"{_first_line(str(exc))}", file=self.out, flush=True)
        except Exception as exc:  # the evidence step, a broken outputs value: still destroy
            result.error = {"kind": type(exc).__name__, "phase": result.phase,
                            "message": str(exc)[-8000:]}
            print(f"[{stack}] {type(exc).__name__} during {result.phase}: "
                  f"{_first_line(str(exc))}", file=self.out, flush=True)
        finally:
            _restore(stack_file, original)
            if handle is not None and not self.keep:
                with _sigint_ignored():
                    self._destroy(handle, result)
            self._write_run(result)
            result.verdicts = self._verdicts(result)
        return result

    def _destroy(self, handle: Any, result: StackResult) -> None:
        for attempt in (1, 2):
            if attempt == 2 and self.retry_delay > 0:
                time.sleep(self.retry_delay)
            try:
                handle.destroy(on_event=Progress(result.stack, f"destroy#{attempt}", self.out,
                                                 result.records))
                result.destroyed = True
                return
            except (self._command_error(), KeyboardInterrupt) as exc:
                kind = getattr(exc, "name", type(exc).__name__)
                result.destroy_errors.append(f"{kind}: {_first_line(str(exc))}")
                print(f"[{result.stack}] destroy attempt {attempt} failed: {kind}: "
                      f"{_first_line(str(exc))}", file=self.out, flush=True)
        result.destroyed = False
        print(f"[{result.stack}] RESOURCES MAY BE LEFT: run 'pulumi destroy -s {result.stack}'",
              file=self.out, flush=True)

    def _dir(self, stack: str) -> Path:
        return self.evidence / stack / "matrix"

    def _write_run(self, result: StackResult) -> None:
        where = self._dir(result.stack)
        where.mkdir(parents=True, exist_ok=True)
        (where / "events.jsonl").write_text(
            "".join(json.dumps(r, default=str) + "\n" for r in result.records), encoding="utf-8")
        summary = {"stack": result.stack, "scenarios": list(result.scenarios),
                   "phase": result.phase, "error": result.error,
                   "arm_errors": result.arm_errors(), "interrupted": result.interrupted,
                   "destroyed": result.destroyed, "destroy_errors": result.destroy_errors,
                   "outputs": result.outputs}
        (where / "run.json").write_text(json.dumps(summary, indent=2, default=str) + "\n",
                                        encoding="utf-8")

    def _fresh_verdict(self, stack: str, scenario: str, result: StackResult) -> Path | None:
        path = self.evidence / stack / scenario / "verdict.json"
        try:
            return path if path.stat().st_mtime >= result.started - 1 else None
        except OSError:
            return None

    def _verdicts(self, result: StackResult) -> list[Path]:
        from vtaplab.judge.verdict import load_verdict, verdict_from_summary, write_verdict

        run_files = [self._dir(result.stack) / "run.json",
                     self._dir(result.stack) / "events.jsonl"]
        errors = result.arm_errors()
        paths: list[Path] = []
        for s in result.scenarios:
            out_dir = self.evidence / result.stack / s
            fresh = self._fresh_verdict(result.stack, s, result)
            tried = f"pulumi up of stack {result.stack} (Automation API)"
            if fresh is not None:
                verdict = load_verdict(fresh)
            else:
                mine = [e for e in errors if scenario_of(e["urn"], e["code"], result.scenarios)
                        == s]
                others = [e for e in errors if e not in mine]
                if mine:
                    verdict = verdict_from_summary(scenario=s, summary=None, files=run_files,
                                                   arm_error={k: mine[0][k] for k in
                                                              ("code", "message", "urn")},
                                                   root=self.root)
                else:
                    if result.interrupted:
                        why = f"interrupted during {result.phase}: nothing measured"
                    elif result.error:
                        why = (f"{result.error['kind']} during {result.error['phase']}: "
                               f"{_first_line(result.error['message'])}")
                    else:
                        why = "the run wrote no verdict for this scenario: nothing measured"
                    verdict = verdict_from_summary(scenario=s, summary=None, files=run_files,
                                                   root=self.root, reason=why)
                if others:
                    verdict["arm_errors"] = others
            verdict.update(label=LABEL_AZURE, stack=result.stack, tried=tried)
            if result.error:
                verdict["run_error"] = {k: result.error[k] for k in ("kind", "phase")}
            if result.destroyed is False:
                verdict["destroy_errors"] = result.destroy_errors
            paths.append(write_verdict(out_dir, verdict))
        return paths


def _restore(path: Path, original: bytes | None) -> None:
    """Put the committed stack file back as it was (``set_config`` rewrites it)."""
    if original is None:
        return
    try:
        if path.read_bytes() != original:
            path.write_bytes(original)
    except OSError:
        path.write_bytes(original)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:200]


def _run_evidence_command(stack: str, root: Path, outputs_file: Path) -> None:
    """``python -m vtaplab evidence STACK --outputs FILE`` — traffic and captures over SSH;
    its verdicts are then picked up like the program's own."""
    log = outputs_file.parent / "evidence.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as handle:
        subprocess.run([sys.executable, "-m", "vtaplab", "evidence", stack, "--outputs",
                        str(outputs_file)], cwd=root,
                       stdout=handle, stderr=subprocess.STDOUT, timeout=EVIDENCE_TIMEOUT_S,
                       check=False)


# --------------------------------------------------------------------------- offline


Runner = Callable[..., subprocess.CompletedProcess]


class OfflineMatrix:
    """The same table without Azure: emulator verdicts and the rules' predictions."""

    def __init__(self, *, root: Path = PROJECT_ROOT, evidence: Path | None = None,
                 out: TextIO | None = None, requests: int = 5,
                 run: Runner = subprocess.run) -> None:
        self.root = Path(root)
        self.evidence = Path(evidence) if evidence is not None else self.root / "evidence"
        self.base = self.evidence / "offline"
        self.out = out or sys.stdout
        self.requests = requests
        self.run_command = run
        self._graphs: dict[str, list[dict]] = {}

    def run(self, scenarios: Sequence[str]) -> list[Path]:
        paths: list[Path] = []
        needed = {self._stack_for(s) for s in scenarios if s in PREDICTED}
        self._build_graphs(sorted(x for x in needed if x))
        for s in scenarios:
            started = time.monotonic()
            if s in EMULATED:
                path = self.emulate(s)
            elif s == "c1":
                path = self.predict_c1()
            elif s == "a":
                path = self.predict_a()
            else:
                path = self.predict_rejection(s)
            from vtaplab.judge.verdict import load_verdict

            v = load_verdict(path)
            print(f"[offline] {s:<4} {v.get('label'):<10} {v.get('outcome'):<14} "
                  f"({time.monotonic() - started:.1f}s) {_first_line(str(v.get('reason')))}",
                  file=self.out, flush=True)
            paths.append(path)
        return paths

    def _rel(self, path: Path) -> str:
        """A path as verdicts write it: relative to the project root when under it."""
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    # -- the emulator

    def _emulate_once(self, scenario: str, out_dir: Path, extra: Sequence[str]) -> tuple[
            int, list[str]]:
        from vtaplab.program.config import KEYS_BY_NAME

        # The proxy mode a deployed stack uses by default: the emulated row stands for it.
        mode = str(KEYS_BY_NAME["proxyMode"].default)
        argv = [sys.executable, "-m", "vtaplab", "emulate", scenario, "--proxy-mode",
                mode, "--requests", str(self.requests), "--out", str(out_dir), *extra]
        out_dir.mkdir(parents=True, exist_ok=True)
        log = out_dir / "emulate.log"
        with log.open("w", encoding="utf-8") as handle:
            try:
                done = self.run_command(argv, cwd=self.root, stdout=handle,
                                        stderr=subprocess.STDOUT, timeout=EMULATE_TIMEOUT_S,
                                        check=False)
                rc = done.returncode
            except subprocess.TimeoutExpired:
                rc = -1
                handle.write(f"\nmatrix: timed out after {EMULATE_TIMEOUT_S}s\n")
        shown = ["python", "-m", "vtaplab", *argv[3:]]
        try:  # the command as a reader would type it, from the project root
            shown[shown.index(str(out_dir))] = str(out_dir.resolve().relative_to(
                self.root.resolve()))
        except ValueError:
            pass
        return rc, shown

    def emulate(self, scenario: str) -> Path:
        from vtaplab.judge.outcome import settle
        from vtaplab.judge.verdict import load_verdict, write_verdict

        out_dir = self.base / scenario
        extra = ["--tenants", str(self._msp_tenants())] if scenario == "msp" else []
        rc, argv = self._emulate_once(scenario, out_dir, extra)
        verdict = self._emulated_verdict(scenario, out_dir, rc, argv)
        for fault in VARIANTS.get(scenario, ()):
            # "delivered, and still delivered with a proxy at fault": every run decides.
            fault_dir = out_dir / fault
            rc2, argv2 = self._emulate_once(scenario, fault_dir, ["--fault", fault])
            run = self._emulated_verdict(scenario, fault_dir, rc2, argv2)
            write_verdict(fault_dir, run)
            verdict["variants"] = [*verdict.get("variants", []), {
                "name": fault, "outcome": run["outcome"], "reason": run.get("reason"),
                "verdict": self._rel(fault_dir / "verdict.json")}]
            verdict["tried"] = f"{verdict['tried']}; then {' '.join(argv2)}"
            verdict["files"] = [*verdict.get("files", []),
                                self._rel(fault_dir / "verdict.json")]
        if VARIANTS.get(scenario):
            settle(verdict)  # the worst of the runs decides
        path = write_verdict(out_dir, verdict)
        load_verdict(path)
        return path

    def _emulated_verdict(self, scenario: str, out_dir: Path, rc: int,
                          argv: Sequence[str]) -> dict[str, Any]:
        from vtaplab.judge.verdict import load_verdict, verdict_from_summary

        log = out_dir / "emulate.log"
        try:
            verdict = load_verdict(out_dir)
        except ValueError:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:] \
                if log.exists() else []
            verdict = verdict_from_summary(
                scenario=scenario, summary=None, files=[], root=None,
                reason=f"the emulator wrote no verdict (exit {rc}): {' / '.join(tail)}")
        verdict["files"] = [*verdict.get("files", []), self._rel(log)]
        verdict.update(label=LABEL_EMULATED, stack="emulator", tried=" ".join(argv),
                       emulator_exit=rc)
        return verdict

    def _msp_tenants(self) -> int:
        """As many tenants as the committed msp stack deploys (its mspTenants, or the
        default), so the emulated row is the same shape as the Azure one."""
        from vtaplab.program import config

        values: dict[str, object] = {}
        stack_file = self.root / "Pulumi.msp.yaml"
        if stack_file.is_file():
            values = config.read_stack_file(stack_file)
        raw = values.get(f"{config.NAMESPACE}:mspTenants",
                         config.KEYS_BY_NAME["mspTenants"].default)
        try:
            return int(str(raw))
        except ValueError:  # the stack run itself reports the bad value
            return facts.MSP_TENANTS_DEFAULT

    # -- the rules' predictions

    def _stack_for(self, scenario: str) -> str | None:
        if scenario == "c1":
            scenario = "b2"  # c1 is b2's tap pointed at a firewall
        if (self.root / f"Pulumi.{scenario}.yaml").is_file():
            return scenario
        from vtaplab.preflight.check import stack_scenarios
        from vtaplab.preflight.mocks import stack_names

        for stack in stack_names(self.root):
            if scenario in stack_scenarios(stack, self.root):
                return stack
        return None

    def _build_graphs(self, stacks: Sequence[str]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from vtaplab.preflight.mocks import build_graph

        todo = [s for s in stacks if s not in self._graphs]
        with ThreadPoolExecutor(max_workers=max(1, min(len(todo), os.cpu_count() or 2))) as pool:
            for stack, g in zip(todo, pool.map(lambda s: build_graph(s, root=self.root), todo),
                                strict=True):
                self._graphs[stack] = g

    def _graph(self, scenario: str) -> tuple[str, list[dict]]:
        stack = self._stack_for(scenario)
        if stack is None:
            raise ValueError(f"no committed stack runs scenario {scenario!r}")
        self._build_graphs([stack])
        return stack, [dict(e) for e in self._graphs[stack]]

    def _prediction_files(self, out_dir: Path, graph: list[dict], report: Any) -> list[Path]:
        from vtaplab.preflight.check import render

        out_dir.mkdir(parents=True, exist_ok=True)
        files = [out_dir / "graph.json", out_dir / "check.json", out_dir / "check.txt"]
        files[0].write_text(json.dumps(graph, indent=1, default=str) + "\n", encoding="utf-8")
        files[1].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        files[2].write_text(render(report), encoding="utf-8")
        return [Path(self._rel(f)) for f in files]

    def _write_prediction(self, scenario: str, stack: str, files: list[Path], tried: str,
                          prediction: dict[str, Any],
                          arm_error: dict[str, Any] | None = None) -> Path:
        """Write a predicted row's verdict: c1 and a label, stack and save theirs alike."""
        from vtaplab.judge.verdict import verdict_from_summary, write_verdict

        verdict = verdict_from_summary(scenario=scenario, summary=None, files=files,
                                       prediction=prediction, arm_error=arm_error)
        verdict.update(label=LABEL_PREDICTED, stack=stack, tried=tried)
        return write_verdict(self.base / scenario, verdict)

    def _error(self, scenario: str, why: str) -> Path:
        from vtaplab.judge.verdict import verdict_from_summary, write_verdict

        verdict = verdict_from_summary(scenario=scenario, summary=None, files=[], reason=why)
        verdict.update(label=LABEL_PREDICTED, stack="preflight", tried="python -m vtaplab check")
        return write_verdict(self.base / scenario, verdict)

    def predict_rejection(self, scenario: str) -> Path:
        """r1, b1: the rules on the stack's graph with the attempts the program makes."""
        from vtaplab.judge.verdict import verdict_from_summary, write_verdict
        from vtaplab.preflight import check

        try:
            stack, graph = self._graph(scenario)
        except Exception as exc:  # a graph that doesn't build is this row's error
            return self._error(scenario, f"the stack's graph did not build: {exc}")
        report = check.evaluate(graph, stack=stack, scenarios=[scenario])
        pred = check.prediction(report, scenario)
        out_dir = self.base / scenario
        files = self._prediction_files(out_dir, graph, report)
        found = [f for f in report.findings if f.scenario == scenario or f.scenario is None]
        coded = [f for f in found if f.arm_code]
        tried = f"python -m vtaplab check {stack}"
        arm_error = None
        if pred["predicted"]:
            first = coded[0] if coded else found[0]
            arm_error = {"code": first.arm_code or "(no ARM code: documented as unsupported)",
                         "message": first.message, "rule": first.rule, "predicted": True}
        pred["refusals"] = pred["predicted"]
        verdict = verdict_from_summary(scenario=scenario, summary=None, files=files,
                                       arm_error=arm_error, prediction=pred)
        if pred["predicted"]:
            verdict["arm_errors"] = [{"code": f.arm_code, "message": f.message, "rule": f.rule,
                                      "predicted": True} for f in coded[1:]]
        verdict.update(label=LABEL_PREDICTED, stack=stack, tried=tried)
        return write_verdict(out_dir, verdict)

    def predict_c1(self) -> Path:
        """c1: b2's tap with an Azure Firewall's ip-configuration as destination."""
        from vtaplab.preflight import check, mocks, rules

        try:
            stack, graph = self._graph("c1")
        except Exception as exc:
            return self._error("c1", f"b2's graph did not build: {exc}")
        taps = [e for e in graph if e.get("type") == rules.T_TAP]
        if not taps:
            return self._error("c1", f"stack {stack}'s graph has no vTAP to point at a firewall")
        tap = dict(taps[0])
        inputs = dict(tap.get("inputs") or {})
        group = inputs.get("resourceGroupName") or "rg"
        firewall_ipconfig = arm_ids.build(mocks.SUBSCRIPTION_ID, group, arm_ids.AZURE_FIREWALL,
                                          "c1-firewall") + "/ipConfigurations/fw-ipconfig"
        inputs.pop("destinationLoadBalancerFrontEndIPConfiguration", None)
        inputs["destinationNetworkInterfaceIPConfiguration"] = {"id": firewall_ipconfig}
        tap["inputs"] = inputs
        graph = [tap if e is taps[0] else e for e in graph]
        report = check.evaluate(graph, stack=stack, scenarios=["c1"])
        out_dir = self.base / "c1"
        files = self._prediction_files(out_dir, graph, report)
        hits = [f for f in report.findings if f.rule == "VTAP002" and f.urn == tap.get("urn")]
        tried = (f"python -m vtaplab check on stack {stack}'s graph with its vTAP's destination "
                 "set to an Azure Firewall ip-configuration")
        return self._write_prediction("c1", stack, files, tried,
                                      {"refusals": _refusal_rows(hits)})

    def predict_a(self) -> Path:
        """a: the rules on stack a's graph; the data path over Direct Connect stays unknown."""
        from vtaplab.preflight import check, rules

        try:
            stack, graph = self._graph("a")
        except Exception as exc:
            return self._error("a", f"stack a's graph did not build: {exc}")
        report = check.evaluate(graph, stack=stack, scenarios=["a"])
        out_dir = self.base / "a"
        files = self._prediction_files(out_dir, graph, report)
        refusals = [f for f in report.findings if f.severity == rules.MANDATORY]
        prediction = {"refusals": _refusal_rows(refusals),
                      "advisory": len(report.findings) - len(refusals)}
        first = refusals[0] if refusals else None
        return self._write_prediction(
            "a", stack, files, f"python -m vtaplab check {stack}", prediction,
            arm_error={"code": first.arm_code, "message": first.message, "rule": first.rule,
                       "predicted": True} if first is not None and first.arm_code else None)


def _refusal_rows(findings: Sequence[Any]) -> list[dict[str, Any]]:
    """The refusals a prediction lists: the same four fields of a finding for every row."""
    return [{"rule": f.rule, "arm_code": f.arm_code, "resource": f.resource,
             "message": f.message} for f in findings]


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    from vtaplab.azure.doctor import OneLineParser

    p = OneLineParser(prog="python -m vtaplab matrix",
                description="Run the scenario matrix (Azure via the Pulumi Automation API, or "
                            "--offline: emulator + preflight predictions) and write "
                            "evidence/RESULTS.md and evidence/results.json.")
    p.add_argument("--stacks", default=None,
                   help="comma-separated stacks (Pulumi.<stack>.yaml); default uksouth. "
                        "With --offline: scenarios (or stacks, read as their scenarios); "
                        "default all")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--destroy", dest="keep", action="store_false",
                      help="destroy every stack after its run (the default)")
    mode.add_argument("--keep", dest="keep", action="store_true",
                      help="leave the stacks deployed (they cost money: see 'vtaplab cost')")
    p.add_argument("--offline", action="store_true",
                   help="no Azure: emulator verdicts (needs root) and the rules' predictions")
    p.add_argument("--skip-doctor", action="store_true",
                   help="do not check the subscription first ('vtaplab doctor STACK' runs "
                        "before each Azure stack by default; a missing prerequisite stops "
                        "the matrix before anything is created)")
    p.add_argument("--evidence", type=Path, default=None, help="evidence directory")
    p.add_argument("--requests", default="5",
                   help="--offline: emulator request rounds per scenario (1-100, default 5)")
    p.add_argument("--readme", type=Path, nargs="?", const=PROJECT_ROOT / "README.md", default=None,
                   help="also rewrite the README's results block (default README.md)")
    p.set_defaults(keep=False)
    return p


def _offline_scenarios(text: str | None, root: Path) -> list[str]:
    if text is None:
        return [s for s in facts.SCENARIOS if s not in OFFLINE_PENDING]
    from vtaplab.preflight.check import stack_scenarios

    out: list[str] = []
    for name in (t.strip() for t in text.split(",") if t.strip()):
        if name in facts.SCENARIOS:
            chosen: Sequence[str] = [name]
        elif (root / f"Pulumi.{name}.yaml").is_file():
            chosen = stack_scenarios(name, root)
        else:
            raise ValueError(f"--stacks: {name!r} is neither a scenario nor a committed stack; "
                             f"accepted: {', '.join(facts.SCENARIOS)}")
        pending = [s for s in chosen if s in OFFLINE_PENDING]
        if pending:
            raise ValueError(f"--stacks: {name!r} needs {', '.join(pending)}, which the "
                             "emulator doesn't build yet; accepted: " + ", ".join(
                                 s for s in facts.SCENARIOS if s not in OFFLINE_PENDING))
        out += [s for s in chosen if s not in out]
    return out


def _azure_stacks(text: str | None, root: Path) -> list[tuple[str, tuple[str, ...]]]:
    from vtaplab.preflight.check import stack_scenarios
    from vtaplab.preflight.mocks import stack_names

    committed = stack_names(root)
    names = [t.strip() for t in (text or ",".join(DEFAULT_STACKS)).split(",") if t.strip()]
    bad = [n for n in names if n not in committed]
    if bad or not names:
        raise ValueError(f"--stacks: {', '.join(bad) or '(none)'} not committed; accepted: "
                         f"{', '.join(committed)}")
    return [(n, stack_scenarios(n, root)) for n in names]


def run_doctor(stacks: Sequence[tuple[str, tuple[str, ...]]], root: Path, out: TextIO,
               doctor: Callable[[str, Path], Sequence[Any]]) -> None:
    """Check the subscription for every stack before anything is deployed: a missing
    prerequisite (unregistered provider or feature, quota, too many vTAPs) raises ValueError
    naming it; an unknown one is printed and the run goes on."""
    from vtaplab.azure import doctor as doctor_module

    missing: list[str] = []
    for stack, _ in stacks:
        checks = list(doctor(stack, root))
        print(doctor_module.render(stack, "", checks), file=out, flush=True)
        missing += [f"{stack}: {c.name} ({c.fix})" for c in checks
                    if c.status == doctor_module.MISSING]
    if missing:
        raise ValueError(f"the subscription is not ready: {'; '.join(missing)}; accepted: "
                         "fix these (see above) and run again, or --skip-doctor")


def _subscription_doctor(stack: str, root: Path) -> Sequence[Any]:
    """``vtaplab doctor STACK`` against the real subscription."""
    from vtaplab.azure import doctor
    from vtaplab.azure.arm import ArmClient, ArmError

    sub, _ = doctor.subscription_id(stack, root, None)
    if not sub:
        raise ValueError("doctor: no subscription id; accepted: $ARM_SUBSCRIPTION_ID, "
                         "azure-native:subscriptionId in the stack file, or 'az login'; "
                         "or --skip-doctor")
    try:
        return doctor.diagnose(stack, client=ArmClient(), subscription=sub, root=root)
    except ArmError as exc:  # authentication: one line naming the credential tried
        raise ValueError(f"doctor: {exc}") from None


def main(argv: list[str], *, auto: Any = None, root: Path = PROJECT_ROOT,
         out: TextIO | None = None, retry_delay: float = 30.0,
         doctor: Callable[[str, Path], Sequence[Any]] | None = None) -> int:
    """``doctor`` checks a stack's subscription first; the real one runs when the real
    Automation API does (``auto`` None), a test's fake runs only the doctor it passes."""
    from vtaplab.judge import findings, results

    out = out or sys.stdout
    args = _parser().parse_args(argv)
    evidence = args.evidence or root / "evidence"
    previous = results.load_previous(evidence / "results.json")
    interrupted = False
    left_behind = False
    try:
        if args.offline:
            scenarios = _offline_scenarios(args.stacks, root)
            try:
                requests = int(args.requests)
            except ValueError:
                requests = 0
            if not 1 <= requests <= 100:
                raise ValueError(f"--requests {args.requests!r}; accepted: 1..100")
            if any(s in EMULATED for s in scenarios) and os.geteuid() != 0:
                print("matrix --offline: the emulator needs root (network namespaces); "
                      "accepted: run as root, or --stacks r1,b1,a,c1 for the predictions only",
                      file=sys.stderr)
                return 2
            paths = OfflineMatrix(root=root, evidence=evidence, out=out,
                                  requests=requests).run(scenarios)
        else:
            stacks = _azure_stacks(args.stacks, root)
            if auto is None and shutil.which("pulumi") is None:
                raise ValueError("the Pulumi CLI is not installed (the Automation API drives "
                                 "it); accepted: install it (https://www.pulumi.com/docs/"
                                 "install/), or --offline for the table without Azure")
            if doctor is None and auto is None:
                doctor = _subscription_doctor
            if doctor is not None and not args.skip_doctor:
                run_doctor(stacks, root, out, doctor)
            runner = AzureMatrix(auto=auto, root=root, evidence=evidence, keep=args.keep,
                                 out=out, retry_delay=retry_delay)
            paths = []
            with _sigterm_interrupts():
                for stack, scenarios_of_stack in stacks:
                    result = runner.run_stack(stack, scenarios_of_stack)
                    paths += result.verdicts
                    left_behind |= result.destroyed is False
                    if result.interrupted:
                        interrupted = True
                        break
    except ValueError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("matrix: interrupted", file=sys.stderr)
        return 130
    rows = results.collect(paths, root=root)
    md, js = results.write(rows, evidence)
    print(file=out)
    print(results.render_readme_block(rows), file=out)
    print(f"matrix: {len(rows)} row(s) -> {md}, {js}", file=out)
    if rows:
        report = findings.write(evidence, paths=paths, graph_of=findings.cached_graphs(),
                                command="python -m vtaplab matrix"
                                + (" --offline" if args.offline else ""))
        print(f"matrix: the write-up -> {report}", file=out)
    if args.readme is not None:
        try:
            changed = results.update_readme(
                args.readme, rows, command="python -m vtaplab matrix"
                + (" --offline" if args.offline else ""))
            print(f"matrix: {args.readme} {'updated' if changed else 'already current'}",
                  file=out)
        except (OSError, results.ReadmeBlockMissing) as exc:
            print(f"matrix: --readme {args.readme}: {exc}", file=sys.stderr)
            return 2
    changed_lines = results.changes(rows, previous)
    if changed_lines:
        print("matrix: CHANGED — the platform answered differently:", file=out)
        for line in changed_lines:
            print(f"  {line}", file=out)
    if interrupted:
        return 130
    if changed_lines:
        return 1
    if left_behind or any(r["outcome"] == "error" for r in rows):
        return 3
    return 0
