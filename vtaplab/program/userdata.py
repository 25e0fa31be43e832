"""cloud-init user data for the lab's VMs, rendered from the templates in ``cloudinit/``.

The templates are cloud-config YAML files with ``${name}`` placeholders (``string.Template``;
a literal dollar is ``$$``). ``render(role, **params)`` fills them and embeds the VM scripts
(``cloudinit/vtap-*.sh``, the same files the emulator runs) into ``write_files`` as base64, so
a script reaches the VM byte for byte. Rendering is pure and deterministic: the same role and
params give the same text, so a second ``pulumi up`` sees no change in ``customData``.

A placeholder ``${script_vtap_proxy}`` stands for ``cloudinit/vtap-proxy.sh`` (underscores after
``script_`` become dashes); everything else must be given by the caller, and is checked.
"""

from __future__ import annotations

import base64
import ipaddress
import string
from collections.abc import Callable, Mapping
from pathlib import Path

from vtaplab import PROJECT_ROOT
from vtaplab.facts import PROXY_MODES, VNI_MAX

TEMPLATE_DIR = PROJECT_ROOT / "cloudinit"
ROLES: tuple[str, ...] = ("src", "client", "proxy", "collector")
SCRIPT_PREFIX = "script_"
# Azure's limit on customData: at most 65535 bytes once its base64 is decoded.
AZURE_CUSTOM_DATA_LIMIT = 65535


class CloudInitError(ValueError):
    """A role, parameter or template the renderer can't use; the message says what is accepted."""


def _ipv4(name: str, value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise CloudInitError(
            f"cloud-init parameter {name}={value!r} is not an IPv4 address; "
            "accepted: e.g. 10.30.3.4"
        ) from None


def _mode(name: str, value: str) -> str:
    if value not in PROXY_MODES:
        raise CloudInitError(
            f"cloud-init parameter {name}={value!r} is not a proxy mode; "
            f"accepted: {' or '.join(PROXY_MODES)}"
        )
    return value


def _vni(name: str, value: str) -> str:
    if not (value.isdigit() and 0 <= int(value) <= VNI_MAX):
        raise CloudInitError(
            f"cloud-init parameter {name}={value!r} is not a VXLAN VNI; accepted: 0..{VNI_MAX}"
        )
    return str(int(value))


def _port(name: str, value: str) -> str:
    if not (value.isdigit() and 1 <= int(value) <= 65535):
        raise CloudInitError(
            f"cloud-init parameter {name}={value!r} is not a TCP port; accepted: 1..65535"
        )
    return str(int(value))


def _vni_list(name: str, value: str) -> str:
    """A comma list of distinct VNIs 1..2^24-1 (msp's tenants), e.g. ``1001,1002,1003``."""
    items = value.split(",")
    if not (value and all(i.isdigit() and 1 <= int(i) <= VNI_MAX for i in items)
            and len({int(i) for i in items}) == len(items)):
        raise CloudInitError(
            f"cloud-init parameter {name}={value!r} is not a list of VNIs; accepted: distinct "
            f"integers 1..{VNI_MAX} separated by commas, e.g. 1001,1002,1003"
        )
    return ",".join(str(int(i)) for i in items)


# role -> {parameter: (validator, required)}; optional parameters feed derived placeholders.
_Validator = Callable[[str, str], str]
ROLE_PARAMS: dict[str, dict[str, tuple[_Validator, bool]]] = {
    "src": {},
    "client": {},
    "proxy": {"pe_ip": (_ipv4, True), "mode": (_mode, True), "vni": (_vni, False),
              "health_port": (_port, False)},
    "collector": {"decap_vnis": (_vni_list, False)},
}

# The collector's decap interfaces (cloudinit/vtap-decap.sh): only with ``decap_vnis``, so a
# collector without tenants boots exactly as before. A systemd oneshot applies them on every
# boot (the VM may be deallocated and started again); the capture (vtap-capture.sh) reads
# the NIC before decapsulation and is unaffected.
DECAP_SCRIPT = "script_vtap_decap"
DECAP_UNIT = "vtap-decap.service"
_DECAP_FILES = """
  - path: /usr/local/sbin/vtap-decap.sh
    owner: root:root
    permissions: "0755"
    encoding: b64
    content: {script}
  - path: /etc/systemd/system/{unit}
    permissions: "0644"
    content: |
      [Unit]
      Description=vtaplab: one VXLAN decap interface per tenant VNI (vtap<VNI>), for an IDS
      Wants=network-online.target
      After=network-online.target

      [Service]
      Type=oneshot
      RemainAfterExit=yes
      ExecStart=/usr/local/sbin/vtap-decap.sh apply --vni {vnis}

      [Install]
      WantedBy=multi-user.target"""
_DECAP_RUNCMD = """
  - [systemctl, daemon-reload]
  # --now applies it on this first boot; enable makes every later boot apply it again.
  - [systemctl, enable, --now, {unit}]"""


# A proxy behind a load balancer (b3, b4) answers its HTTP probe with cloudinit/vtap-health.py:
# only with ``health_port``, so a proxy the vTAP points at directly (b2, a, msp) boots exactly
# as before. A long-running unit, bounded by systemd (memory, CPU, tasks) and restarted if it
# dies; it starts after the rewrite's unit, whose state it reports.
HEALTH_SCRIPT = "vtap-health.py"
HEALTH_UNIT = "vtap-health.service"
_HEALTH_FILES = """
  - path: /usr/local/sbin/{script}
    owner: root:root
    permissions: "0755"
    encoding: b64
    content: {content}
  - path: /etc/systemd/system/{unit}
    permissions: "0644"
    content: |
      [Unit]
      Description=vtaplab: health endpoint for the LB probe (200 only while the rewrite works)
      Wants=network-online.target
      After=network-online.target vtap-proxy.service

      [Service]
      Type=simple
      ExecStart=/usr/bin/python3 /usr/local/sbin/{script} --target {pe_ip} --port {port}
      Restart=always
      RestartSec=2
      # Bounded: a probe every few seconds needs little; a runaway can't take the proxy down.
      MemoryMax=64M
      CPUQuota=20%
      TasksMax=16
      NoNewPrivileges=yes
      PrivateTmp=yes
      ProtectHome=yes

      [Install]
      WantedBy=multi-user.target"""
_HEALTH_RUNCMD = """
  - [systemctl, enable, --now, {unit}]"""


def _derived(role: str, params: Mapping[str, str]) -> dict[str, str]:
    """Placeholders computed from the caller's parameters (not settable directly)."""
    if role == "proxy":
        vni = params.get("vni", "")
        port = params.get("health_port", "")
        health = {"health_files": "", "health_runcmd": ""}
        if port:
            content = base64.b64encode((TEMPLATE_DIR / HEALTH_SCRIPT).read_bytes()).decode()
            health = {"health_files": _HEALTH_FILES.format(
                          script=HEALTH_SCRIPT, content=content, unit=HEALTH_UNIT,
                          pe_ip=params["pe_ip"], port=port),
                      "health_runcmd": _HEALTH_RUNCMD.format(unit=HEALTH_UNIT)}
        return {"vni_args": f" --vni {vni}" if vni else "", **health}
    if role == "collector":
        vnis = params.get("decap_vnis", "")
        if not vnis:
            return {"decap_files": "", "decap_runcmd": ""}
        return {"decap_files": _DECAP_FILES.format(script=_script_b64(DECAP_SCRIPT),
                                                   unit=DECAP_UNIT, vnis=vnis),
                "decap_runcmd": _DECAP_RUNCMD.format(unit=DECAP_UNIT)}
    return {}


DERIVED: dict[str, tuple[str, ...]] = {
    "proxy": ("vni_args", "health_files", "health_runcmd"),
    "collector": ("decap_files", "decap_runcmd")}
"""The placeholders ``_derived`` fills, per role."""


def template_path(role: str) -> Path:
    return TEMPLATE_DIR / f"{role}.yaml"


def script_path(placeholder: str) -> Path:
    """``script_vtap_proxy`` -> ``cloudinit/vtap-proxy.sh``."""
    return TEMPLATE_DIR / (placeholder[len(SCRIPT_PREFIX):].replace("_", "-") + ".sh")


def placeholders(text: str) -> list[str]:
    """The placeholder names a template uses, in order of first use."""
    names: list[str] = []
    for match in string.Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            line = text.count("\n", 0, match.start("invalid")) + 1
            raise CloudInitError(
                f"cloud-init template has a stray '$' on line {line}; "
                "accepted: ${name} placeholders, or $$ for a literal dollar"
            )
        name = match.group("named") or match.group("braced")
        if name and name not in names:
            names.append(name)
    return names


def scripts_for(role: str) -> list[Path]:
    """The VM scripts a role's template embeds (the collector's vtap-decap.sh: only when
    rendered with ``decap_vnis``; the proxy's vtap-health.py: only with ``health_port``)."""
    text = _read_template(role)
    scripts = [script_path(n) for n in placeholders(text) if n.startswith(SCRIPT_PREFIX)]
    if role == "collector":
        scripts.append(script_path(DECAP_SCRIPT))
    if role == "proxy":
        scripts.append(TEMPLATE_DIR / HEALTH_SCRIPT)
    return scripts


def _read_template(role: str) -> str:
    if role not in ROLES:
        raise CloudInitError(f"cloud-init role {role!r} is unknown; accepted: {', '.join(ROLES)}")
    path = template_path(role)
    if not path.is_file():
        raise CloudInitError(f"cloud-init template {path} is missing (role {role!r})")
    return path.read_text(encoding="utf-8")


def _script_b64(placeholder: str) -> str:
    path = script_path(placeholder)
    if not path.is_file():
        raise CloudInitError(
            f"cloud-init placeholder ${{{placeholder}}} needs {path}, which does not exist"
        )
    return base64.b64encode(path.read_bytes()).decode("ascii")


def render(role: str, **params: str) -> str:
    """The user data (``#cloud-config`` text) for ``role``, with ``params`` filled in.

    Roles and their parameters: ``src``, ``client``: none; ``collector``: optional
    ``decap_vnis`` (comma list of VNIs: one decap interface each, every boot); ``proxy``:
    ``pe_ip`` (the Private Endpoint's IPv4), ``mode`` (netdev|stateless|conntrack), optional
    ``vni``, optional ``health_port`` (behind an LB: vtap-health.py answers its probe there).
    Raises ``CloudInitError`` on an unknown role, a missing, unknown or malformed parameter,
    or a template placeholder nothing provides.
    """
    text = _read_template(role)
    spec = ROLE_PARAMS[role]
    accepted = ", ".join(f"{k}{'' if req else ' (optional)'}" for k, (_, req) in spec.items())
    accepted = accepted or "none"
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise CloudInitError(
            f"cloud-init role {role!r} got unknown parameter(s) {', '.join(unknown)}; "
            f"accepted: {accepted}"
        )
    missing = [k for k, (_, required) in spec.items() if required and k not in params]
    if missing:
        raise CloudInitError(
            f"cloud-init role {role!r} is missing parameter(s) {', '.join(missing)}; "
            f"accepted: {accepted}"
        )
    values: dict[str, str] = {}
    for key, value in params.items():
        if not isinstance(value, str):
            raise CloudInitError(
                f"cloud-init parameter {key}={value!r} is not a string; accepted: a str "
                "(call render inside Output.apply so Outputs arrive as plain values)"
            )
        values[key] = spec[key][0](key, value)
    values.update(_derived(role, values))
    for name in placeholders(text):
        if name.startswith(SCRIPT_PREFIX):
            values[name] = _script_b64(name)
        elif name not in values:
            raise CloudInitError(
                f"cloud-init template {template_path(role).name} uses ${{{name}}}, which "
                f"role {role!r} does not provide; accepted parameters: {accepted}"
            )
    return string.Template(text).substitute(values)


def custom_data(user_data: str) -> str:
    """``user_data`` as Azure's ``osProfile.customData`` wants it: base64, within the limit.

    Azure can't update customData on an existing VM, so a changed template or script means a
    new VM on the next ``pulumi up``: one more reason rendering must be deterministic.
    """
    raw = user_data.encode("utf-8")
    if len(raw) > AZURE_CUSTOM_DATA_LIMIT:
        raise CloudInitError(
            f"cloud-init user data is {len(raw)} bytes; accepted: at most "
            f"{AZURE_CUSTOM_DATA_LIMIT} (Azure's customData limit, before base64)"
        )
    return base64.b64encode(raw).decode("ascii")




HOST_KEY_KEYS = ("ssh_deletekeys", "ssh_genkeytypes", "ssh_keys")


def with_host_key(user_data: str, *, private_pem: str, public_line: str) -> str:
    """``user_data`` plus cloud-init's ``ssh_keys``: the VM boots with exactly this Ed25519
    host key (the image's keys deleted, none generated), so the lab can pin it before the VM
    exists (LinuxVm's ``tls.PrivateKey``). The result holds a private key: keep it secret."""
    if not user_data.startswith("#cloud-config\n"):
        raise CloudInitError("with_host_key: user data is not a #cloud-config document")
    for key in HOST_KEY_KEYS:
        if any(line.startswith(f"{key}:") for line in user_data.splitlines()):
            raise CloudInitError(f"with_host_key: user data already sets {key}; accepted: "
                                 "a template without SSH host key settings")
    pem = private_pem.strip()
    if not (pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
            and pem.endswith("-----END OPENSSH PRIVATE KEY-----")):
        raise CloudInitError("with_host_key: private_pem is not an OpenSSH private key (value "
                             "not shown); accepted: vtaplab.azure.ssh.HostKeyPair.private_pem")
    fields = public_line.split()
    if len(fields) < 2 or fields[0] != "ssh-ed25519" or not re_b64(fields[1]):
        raise CloudInitError(f"with_host_key: public_line {public_line[:40]!r} is not an "
                             "Ed25519 public key; accepted: 'ssh-ed25519 AAAA...'")
    indented = "\n".join("    " + line for line in pem.splitlines())
    block = (
        "# The SSH host key the lab pins (pulumi-tls, a secret in the stack state): the\n"
        "# image's keys are deleted and none generated, so the first connection is verified.\n"
        "ssh_deletekeys: true\n"
        # Generation is skipped when ssh_keys is given (cc_ssh); the schema wants >= 1 type.
        "ssh_genkeytypes: [ed25519]\n"
        "ssh_keys:\n"
        "  ed25519_private: |\n"
        f"{indented}\n"
        f"  ed25519_public: {fields[0]} {fields[1]}\n"
    )
    return user_data.rstrip("\n") + "\n" + block


def re_b64(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) > 0
    except ValueError:
        return False
