"""A stand-in for the Pulumi engine's side of a plugin: start a real host process, talk gRPC.

The Pulumi CLI can't run here, but the host processes it starts ship in the pip packages. This
module starts them the way the engine does and speaks to them with the engine's messages
(``pulumi.runtime.proto``), so a test meets the real host instead of a mock:

- the dynamic-provider host: ``python -u -m pulumi.dynamic ENGINE`` with the *project root* as
  working directory (pulumi/pulumi ``sdk/python/dist/pulumi-resource-pulumi-python``: the
  provider plugin script; ``sdk/go/common/resource/plugin/provider_plugin.go`` starts provider
  plugins in the program's directory with the engine's address as the argument);
- a Python policy pack: ``<pack venv>/bin/python -u -m pulumi.policy ENGINE PACK_DIR`` with the
  *pack directory* as working directory and ``PULUMI_PROJECT``/``PULUMI_STACK``/
  ``PULUMI_DRY_RUN``/``PULUMI_CONFIG`` set, the virtualenv taken from ``PulumiPolicy.yaml``'s
  ``runtime.options.virtualenv`` relative to the pack directory (pulumi/pulumi
  ``sdk/python/cmd/pulumi-language-python/main.go`` ``RunPlugin`` and ``parseOptions``,
  ``sdk/python/toolchain/pip.go`` ``resolveVirtualEnvironmentPath``).

A host prints its gRPC port as the first line of stdout; the engine dials ``127.0.0.1:PORT``.
Everything is bounded: the port must appear within ``start_timeout``, every call carries a
deadline, and the process (started by us, in its own session) is stopped by pid in a
``finally``. A tiny Engine service answers the hosts' log calls, as the engine's would.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import (
    analyzer_pb2,
    analyzer_pb2_grpc,
    engine_pb2_grpc,
    provider_pb2,
    provider_pb2_grpc,
)

# Seconds: a host is up well within this on this machine (the policy pack imports vtaplab).
START_TIMEOUT = 60.0
# Seconds per gRPC call.
CALL_TIMEOUT = 60.0
# The engine's wire sentinel for a value unknown during preview (pulumi ``UnknownStringValue``).
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


class HostError(RuntimeError):
    """A host did not start or answer; the message carries its stderr."""


class _EngineLog(engine_pb2_grpc.EngineServicer):
    """The engine's Log service: hosts report diagnostics here (kept for assertions)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def Log(self, request: Any, context: Any) -> empty_pb2.Empty:
        self.messages.append(request.message)
        return empty_pb2.Empty()


@dataclass
class Host:
    """A started host process and the channel to it."""

    proc: subprocess.Popen[bytes]
    port: int
    channel: grpc.Channel
    stderr_path: Path
    engine_log: list[str] = field(default_factory=list)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _read_port(proc: subprocess.Popen[bytes], deadline: float, stderr_path: Path) -> int:
    """The first stdout line of a host: its port. Bounded by ``deadline``."""
    assert proc.stdout is not None
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            err = stderr_path.read_text(errors="replace")[-4000:]
            state = "timed out" if proc.poll() is None else f"exited {proc.returncode}"
            raise HostError(f"host {proc.args!r} {state} before printing its port; stderr:\n{err}")
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(fd, 256)
            if not chunk:
                continue  # EOF: poll() above reports the exit
            buf += chunk
    line = buf.split(b"\n", 1)[0].strip()
    try:
        return int(line)
    except ValueError:
        raise HostError(f"host {proc.args!r} printed {line!r} where its port belongs") from None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a host we started, by its pid: SIGTERM, then SIGKILL after 5 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextlib.contextmanager
def engine_service() -> Iterator[tuple[str, _EngineLog]]:
    """The engine's gRPC address (loopback) serving Log, for the hosts' first argument."""
    log = _EngineLog()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    engine_pb2_grpc.add_EngineServicer_to_server(log, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", log
    finally:
        server.stop(grace=None)


@contextlib.contextmanager
def start_host(argv: list[str], *, cwd: Path, env: Mapping[str, str],
               after_engine: tuple[str, ...] = (),
               start_timeout: float = START_TIMEOUT) -> Iterator[Host]:
    """Start ``argv ENGINE_ADDRESS *after_engine`` in ``cwd`` with exactly ``env``, wait for its
    port, yield a :class:`Host`."""
    with engine_service() as (address, log), tempfile.TemporaryDirectory() as tmp:
        stderr_path = Path(tmp) / "stderr"
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen([*argv, address, *after_engine], cwd=cwd, env=dict(env),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err, start_new_session=True)
        channel: grpc.Channel | None = None
        try:
            port = _read_port(proc, time.monotonic() + start_timeout, stderr_path)
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            grpc.channel_ready_future(channel).result(timeout=start_timeout)
            yield Host(proc, port, channel, stderr_path, log.messages)
        finally:
            if channel is not None:
                channel.close()
            _stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment for a host: PATH, HOME, LANG and what the test adds — nothing of
    the developer's Azure or Pulumi settings leaks in."""
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}}
    env.update(extra)
    return env


# --- the dynamic-provider host ---------------------------------------------------------------


@contextlib.contextmanager
def dynamic_provider_host(project_root: Path, python: Path, env: Mapping[str, str]
                          ) -> Iterator[provider_pb2_grpc.ResourceProviderStub]:
    """``python -u -m pulumi.dynamic`` in the project root, configured as the engine does."""
    argv = [str(python), "-u", "-m", "pulumi.dynamic"]
    with start_host(argv, cwd=project_root, env=env) as host:
        stub = provider_pb2_grpc.ResourceProviderStub(host.channel)
        try:
            stub.GetPluginInfo(empty_pb2.Empty(), timeout=CALL_TIMEOUT)
            stub.Configure(provider_pb2.ConfigureRequest(
                variables={}, args=struct_pb2.Struct(), acceptSecrets=True,
                acceptResources=True), timeout=CALL_TIMEOUT)
            yield stub
        except grpc.RpcError as error:
            raise HostError(f"dynamic provider host: {error.code()}: {error.details()}\n"
                            f"stderr:\n{host.stderr()}") from None


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A property map on the wire (unknowns as :data:`UNKNOWN`, as the engine marshals them)."""
    out = struct_pb2.Struct()
    json_format.ParseDict(dict(value), out)
    return out


def unstruct(value: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


# --- the policy analyzer ---------------------------------------------------------------------


def policy_python(pack_dir: Path) -> Path:
    """The interpreter the Python language host runs a pack with: ``runtime.options.virtualenv``
    of its ``PulumiPolicy.yaml``, relative to the pack directory (``venv`` when unset)."""
    spec = yaml.safe_load((pack_dir / "PulumiPolicy.yaml").read_text())
    runtime = spec.get("runtime") if isinstance(spec, dict) else None
    options = (runtime.get("options") or {}) if isinstance(runtime, dict) else {}
    venv = Path(str(options.get("virtualenv") or "venv"))
    return (venv if venv.is_absolute() else pack_dir / venv) / "bin" / "python"


@dataclass
class Analyzer:
    stub: analyzer_pb2_grpc.AnalyzerStub
    host: Host

    def analyze_stack(self, resources: list[analyzer_pb2.AnalyzerResource]
                      ) -> analyzer_pb2.AnalyzeResponse:
        try:
            return self.stub.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources),
                                          timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            raise HostError(f"AnalyzeStack: {error.code()}: {error.details()}\n"
                            f"stderr:\n{self.host.stderr()}") from None


@contextlib.contextmanager
def policy_pack_host(pack_dir: Path, *, project: str, stack: str, dry_run: bool = True,
                     config: Mapping[str, str] | None = None,
                     env: Mapping[str, str] | None = None) -> Iterator[Analyzer]:
    """A Python policy pack started as the language host starts it, handshaken and configured."""
    python = policy_python(pack_dir)
    if not python.exists():
        raise HostError(f"{pack_dir / 'PulumiPolicy.yaml'}: runtime.options.virtualenv gives "
                        f"{python}, which does not exist; the engine could not start the pack")
    run_env = dict(env or base_env())
    run_env.update({"PULUMI_PROJECT": project, "PULUMI_STACK": stack,
                    "PULUMI_DRY_RUN": "true" if dry_run else "false",
                    "PULUMI_CONFIG": json.dumps(dict(config or {}))})
    argv = [str(python), "-u", "-m", "pulumi.policy"]
    # The language host puts the pack directory *after* the engine address.
    with start_host(argv, cwd=pack_dir, env=run_env, after_engine=(str(pack_dir),)) as host:
        stub = analyzer_pb2_grpc.AnalyzerStub(host.channel)
        yield _configured(stub, host, pack_dir, project=project, stack=stack, dry_run=dry_run)


def _configured(stub: analyzer_pb2_grpc.AnalyzerStub, host: Host, pack_dir: Path, *,
                project: str, stack: str, dry_run: bool) -> Analyzer:
    try:
        try:
            stub.Handshake(analyzer_pb2.AnalyzerHandshakeRequest(
                engine_address="127.0.0.1:0", root_directory=str(pack_dir),
                program_directory=str(pack_dir)), timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:  # optional, as in analyzer_plugin.go
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        try:
            stub.ConfigureStack(analyzer_pb2.AnalyzerStackConfigureRequest(
                stack=stack, project=project, organization="organization", dry_run=dry_run),
                timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        raise HostError(f"policy pack: {error.code()}: {error.details()}\n"
                        f"stderr:\n{host.stderr()}") from None
    return Analyzer(stub, host)


def stack_resource(urn: str, typ: str, outputs: Mapping[str, Any], *, parent: str = "",
                   property_dependencies: Mapping[str, list[str]] | None = None
                   ) -> analyzer_pb2.AnalyzerResource:
    """One resource as the engine sends it to AnalyzeStack: its *outputs* (pulumi/pulumi
    ``pkg/resource/deploy/step_generator.go`` ``AnalyzeResources``), internal ``__`` keys
    dropped, plus parent, dependencies and property dependencies."""
    props = {k: v for k, v in outputs.items() if not k.startswith("__")}
    deps = {k: analyzer_pb2.AnalyzerPropertyDependencies(urns=list(v))
            for k, v in (property_dependencies or {}).items()}
    flat = sorted({u for v in (property_dependencies or {}).values() for u in v})
    return analyzer_pb2.AnalyzerResource(
        urn=urn, type=typ, name=urn.rsplit("::", 1)[-1], properties=struct(props),
        parent=parent, dependencies=flat, propertyDependencies=deps)
