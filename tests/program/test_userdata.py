"""cloud-init user data: every role renders, passes Debian's `cloud-init schema`, embeds the
VM scripts byte for byte, and the proxy's boot-time command really works with its script."""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers.netns import ns_run

from vtaplab.program import userdata
from vtaplab.program.userdata import CloudInitError, render

PARAMS: dict[str, dict[str, str]] = {
    "src": {},
    "client": {},
    "proxy": {"pe_ip": "10.30.3.4", "mode": "stateless"},
    "collector": {"decap_vnis": "1001,1002,1003"},
}
# Where each role's scripts land (contracts.md: /usr/local/sbin, mode 0755).
SCRIPTS: dict[str, list[str]] = {
    "src": [],
    "client": ["vtap-traffic.sh"],
    "proxy": ["vtap-proxy.sh"],
    "collector": ["vtap-capture.sh", "vtap-decap.sh"],
}


def parsed(role: str, **params: str) -> dict:
    text = render(role, **params)
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def files_of(doc: dict) -> dict[str, dict]:
    return {entry["path"]: entry for entry in doc.get("write_files", [])}


def require_scripts(role: str) -> None:
    missing = [s for s in SCRIPTS[role] if not (userdata.TEMPLATE_DIR / s).is_file()]
    if missing:
        pytest.skip(f"scripts not written yet (emulator engineer): {', '.join(missing)}")


# ----------------------------------------------------------------------------- schema


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="Debian's cloud-init not installed")
@pytest.mark.parametrize("role", userdata.ROLES)
def test_rendered_user_data_passes_cloud_init_schema(role, tmp_path):
    require_scripts(role)
    path = tmp_path / f"{role}.yaml"
    path.write_text(render(role, **PARAMS[role]))
    result = subprocess.run(["cloud-init", "schema", "--config-file", str(path)],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Valid cloud-config" in output
    assert "deprecat" not in output.lower()


def test_schema_check_can_fail(tmp_path):
    # The check above is only worth something if cloud-init rejects a broken file.
    if shutil.which("cloud-init") is None:
        pytest.skip("Debian's cloud-init not installed")
    path = tmp_path / "bad.yaml"
    path.write_text("#cloud-config\npackages: nginx\n")
    result = subprocess.run(["cloud-init", "schema", "--config-file", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


@pytest.mark.parametrize("role", userdata.ROLES)
def test_rendered_user_data_fits_azure_custom_data(role):
    require_scripts(role)
    text = render(role, **PARAMS[role])
    assert len(text.encode()) <= userdata.AZURE_CUSTOM_DATA_LIMIT
    assert base64.b64decode(userdata.custom_data(text)).decode() == text


def test_custom_data_over_the_limit_is_refused():
    with pytest.raises(CloudInitError, match="70014 bytes; accepted: at most 65535"):
        userdata.custom_data("#cloud-config\n" + "x" * 70000)


@pytest.mark.parametrize("role", userdata.ROLES)
def test_rendering_is_deterministic(role):
    require_scripts(role)
    assert render(role, **PARAMS[role]) == render(role, **PARAMS[role])


# ----------------------------------------------------------------------------- content


@pytest.mark.parametrize("role", userdata.ROLES)
def test_scripts_are_embedded_byte_for_byte(role):
    require_scripts(role)
    files = files_of(parsed(role, **PARAMS[role]))
    embedded = sorted(p for p in files if p.startswith("/usr/local/sbin/"))
    assert embedded == sorted(f"/usr/local/sbin/{s}" for s in SCRIPTS[role])
    for script in SCRIPTS[role]:
        entry = files[f"/usr/local/sbin/{script}"]
        assert entry["permissions"] == "0755"
        assert entry["encoding"] == "b64"
        assert base64.b64decode(entry["content"]) == (userdata.TEMPLATE_DIR / script).read_bytes()


def test_src_runs_nginx_with_a_page_and_a_big_file():
    doc = parsed("src")
    assert "nginx" in doc["packages"]
    assert "/var/www/html/index.html" in files_of(doc)
    commands = [" ".join(map(str, c)) if isinstance(c, list) else c for c in doc["runcmd"]]
    assert any("enable --now nginx" in c for c in commands)
    big = next(c for c in commands if "big.bin" in c)
    assert "head -c 204800" in big and "/dev/urandom" not in big


def test_client_gets_curl():
    require_scripts("client")
    assert "curl" in parsed("client")["packages"]


def test_collector_gets_tcpdump():
    require_scripts("collector")
    assert "tcpdump" in parsed("collector")["packages"]


PROXY_UNIT = "/etc/systemd/system/vtap-proxy.service"


def exec_start(doc: dict, unit_path: str) -> str:
    """The one ExecStart= command of the systemd unit the user data writes at ``unit_path``."""
    unit = files_of(doc)[unit_path]["content"]
    lines = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, unit
    return lines[0][len("ExecStart="):]


@pytest.mark.parametrize("mode", ["netdev", "stateless", "conntrack"])
def test_proxy_applies_the_rewrite_to_the_pe_ip_given(mode):
    require_scripts("proxy")
    doc = parsed("proxy", pe_ip="10.77.3.9", mode=mode)
    command = exec_start(doc, PROXY_UNIT)
    assert command == f"/usr/local/sbin/vtap-proxy.sh apply --mode {mode} --target 10.77.3.9"
    assert {"nftables", "iptables", "conntrack"} <= set(doc["packages"])


def test_proxy_reapplies_on_every_boot():
    require_scripts("proxy")
    doc = parsed("proxy", **PARAMS["proxy"])
    unit = files_of(doc)["/etc/systemd/system/vtap-proxy.service"]["content"]
    assert "WantedBy=multi-user.target" in unit and "Type=oneshot" in unit
    assert ["systemctl", "enable", "--now", "vtap-proxy.service"] in doc["runcmd"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize(("role", "script"), [("proxy", "vtap-proxy"), ("collector", "vtap-decap")])
def test_units_pass_systemd_analyze(tmp_path, role, script):
    require_scripts(role)
    unit_path = f"/etc/systemd/system/{script}.service"
    unit = files_of(parsed(role, **PARAMS[role]))[unit_path]["content"]
    # verify insists the ExecStart binary exists: point it at the script in this checkout.
    path = tmp_path / f"{script}.service"
    path.write_text(unit.replace(f"/usr/local/sbin/{script}.sh",
                                 str(userdata.TEMPLATE_DIR / f"{script}.sh")))
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                            text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ignoring" not in output and "Unknown" not in output, output


def test_proxy_vni_is_passed_on():
    require_scripts("proxy")
    command = exec_start(parsed("proxy", pe_ip="10.30.3.4", mode="stateless", vni="7"), PROXY_UNIT)
    assert command.endswith("--target 10.30.3.4 --vni 7")


# ----------------------------------------------------------------------------- collector decap

DECAP_UNIT = "/etc/systemd/system/vtap-decap.service"


def test_collector_decaps_the_vnis_given_on_every_boot():
    require_scripts("collector")
    doc = parsed("collector", decap_vnis="1001,1002,1003")
    assert exec_start(doc, DECAP_UNIT) == "/usr/local/sbin/vtap-decap.sh apply --vni 1001,1002,1003"
    unit = files_of(doc)[DECAP_UNIT]["content"]
    assert "WantedBy=multi-user.target" in unit and "Type=oneshot" in unit
    assert doc["runcmd"][-2:] == [["systemctl", "daemon-reload"],
                                  ["systemctl", "enable", "--now", "vtap-decap.service"]]
    # the capture is still there, unchanged
    assert "/usr/local/sbin/vtap-capture.sh" in files_of(doc)
    assert userdata.scripts_for("collector") == [userdata.TEMPLATE_DIR / "vtap-capture.sh",
                                                userdata.TEMPLATE_DIR / "vtap-decap.sh"]


def test_collector_without_decap_vnis_has_no_decap():
    require_scripts("collector")
    doc = parsed("collector")
    assert sorted(p for p in files_of(doc) if p.startswith("/usr/local/sbin/")) == [
        "/usr/local/sbin/vtap-capture.sh"]
    assert DECAP_UNIT not in files_of(doc)
    assert doc["runcmd"] == [["mkdir", "-p", "/var/lib/vtaplab"]]
    assert "decap" not in render("collector")


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="Debian's cloud-init not installed")
def test_collector_without_decap_passes_cloud_init_schema(tmp_path):
    require_scripts("collector")
    path = tmp_path / "collector.yaml"
    path.write_text(render("collector"))
    result = subprocess.run(["cloud-init", "schema", "--config-file", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("vnis", ["", "0", "16777216", "1001,1001", "1001,", "a",
                                  "1001;reboot", "1001\nruncmd: [reboot]", "1001, 1002"])
def test_bad_decap_vnis_are_refused_in_one_line(vnis):
    with pytest.raises(CloudInitError, match=r"decap_vnis=.* is not a list of VNIs; accepted: "
                                             r"distinct integers 1\.\.16777215") as info:
        render("collector", decap_vnis=vnis)
    assert "\n" not in str(info.value).replace(repr(vnis), "")


def test_decap_vnis_are_normalised():
    require_scripts("collector")
    doc = parsed("collector", decap_vnis="01001,7")
    assert exec_start(doc, DECAP_UNIT).endswith("--vni 1001,7")


# ----------------------------------------------------------------------------- bad input


def test_missing_parameter_is_named():
    with pytest.raises(CloudInitError, match=r"role 'proxy' is missing parameter\(s\) pe_ip; "
                                             r"accepted: pe_ip, mode, vni \(optional\)"):
        render("proxy", mode="stateless")


def test_unknown_parameter_is_named():
    with pytest.raises(CloudInitError, match=r"role 'src' got unknown parameter\(s\) pe_ip; "
                                             r"accepted: none"):
        render("src", pe_ip="10.30.3.4")


def test_unknown_role_is_named():
    with pytest.raises(CloudInitError, match=r"role 'router' is unknown; accepted: src, client, "
                                             r"proxy, collector"):
        render("router")


@pytest.mark.parametrize(("params", "problem"), [
    ({"pe_ip": "10.30.3.4\nruncmd: [reboot]", "mode": "stateless"}, "not an IPv4 address"),
    ({"pe_ip": "pe.example", "mode": "stateless"}, "not an IPv4 address"),
    ({"pe_ip": "10.30.3.4", "mode": "dnat"}, "not a proxy mode"),
    ({"pe_ip": "10.30.3.4", "mode": "stateless", "vni": "16777216"}, "not a VXLAN VNI"),
])
def test_malformed_parameter_is_refused(params, problem):
    with pytest.raises(CloudInitError, match=problem):
        render("proxy", **params)


def test_non_string_parameter_says_to_use_apply():
    with pytest.raises(CloudInitError, match=r"Output\.apply"):
        render("proxy", pe_ip=object(), mode="stateless")  # type: ignore[arg-type]


@pytest.fixture
def template_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(userdata, "TEMPLATE_DIR", tmp_path)
    return tmp_path


def test_placeholder_nothing_provides_is_named(template_dir):
    (template_dir / "src.yaml").write_text("#cloud-config\nhostname: ${host_name}\n")
    with pytest.raises(CloudInitError, match=r"uses \$\{host_name\}, which role 'src' does not "
                                             r"provide"):
        render("src")


def test_missing_script_is_named(template_dir):
    (template_dir / "client.yaml").write_text(
        "#cloud-config\nwrite_files:\n  - path: /x\n    content: ${script_vtap_nothing}\n")
    with pytest.raises(CloudInitError, match=r"vtap-nothing\.sh, which does not exist"):
        render("client")


def test_stray_dollar_is_named(template_dir):
    (template_dir / "src.yaml").write_text("#cloud-config\nruncmd:\n  - echo $ 5\n")
    with pytest.raises(CloudInitError, match="stray '\\$' on line 3"):
        render("src")


def test_templates_use_only_known_placeholders():
    for role in userdata.ROLES:
        names = userdata.placeholders(userdata.template_path(role).read_text())
        allowed = set(userdata.ROLE_PARAMS[role]) | set(userdata.DERIVED.get(role, ()))
        for name in names:
            assert name.startswith(userdata.SCRIPT_PREFIX) or name in allowed, (role, name)


# ----------------------------------------------------------------------------- the glue works


def _can_use_netns() -> bool:
    return (os.geteuid() == 0 and shutil.which("ip") is not None
            and shutil.which("nft") is not None)


def _boot_command_applied(tmp_path: Path, ns: str, doc: dict, script_path: str,
                          command: str) -> None:
    """Write the user data's copy of ``script_path`` and run the unit's ExecStart in ``ns``."""
    script = tmp_path / Path(script_path).name
    script.write_bytes(base64.b64decode(files_of(doc)[script_path]["content"]))
    script.chmod(0o755)
    argv = shlex.split(command)
    assert argv[0] == script_path
    ns_run(ns, str(script), *argv[1:], timeout=30)


@pytest.mark.skipif(not _can_use_netns(), reason="needs root, iproute2 and nftables")
def test_proxy_boot_command_works_with_its_script(tmp_path, lab):
    """Run the rendered unit's ExecStart (script from user data) in a namespace of our own."""
    require_scripts("proxy")
    doc = parsed("proxy", pe_ip="10.30.3.4", mode="stateless", vni="42")
    ns = lab.add_ns("proxy")
    _boot_command_applied(tmp_path, ns, doc, "/usr/local/sbin/vtap-proxy.sh",
                          exec_start(doc, PROXY_UNIT))
    # Read the ruleset directly rather than through `vtap-proxy.sh status`: this test is
    # about the user data's command line, not about the script's own reporting.
    status = ns_run(ns, "nft", "list", "table", "ip", "vtaplab_proxy", timeout=30).stdout
    assert ns_run(ns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert "ip daddr set 10.30.3.4" in status
    assert "set 0x2a" in status  # VNI 42 stamped


# ----------------------------------------------------------------------------- host keys


def _with_key(role: str) -> tuple[str, object]:
    from vtaplab.azure import ssh

    pair = ssh.host_key_for("a test seed of thirty-two characters!", f"b2-{role}")
    return userdata.with_host_key(render(role, **PARAMS[role]), private_pem=pair.private_pem,
                                  public_line=pair.public_line), pair


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="Debian's cloud-init not installed")
@pytest.mark.parametrize("role", userdata.ROLES)
def test_user_data_with_host_key_passes_cloud_init_schema(role, tmp_path):
    require_scripts(role)
    text, _pair = _with_key(role)
    path = tmp_path / f"{role}.yaml"
    path.write_text(text)
    result = subprocess.run(["cloud-init", "schema", "--config-file", str(path)],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Valid cloud-config" in output, output
    assert "deprecat" not in output.lower()


@pytest.mark.parametrize("role", userdata.ROLES)
def test_host_key_lands_where_cloud_init_reads_it(role):
    require_scripts(role)
    text, pair = _with_key(role)
    doc = yaml.safe_load(text)
    assert doc["ssh_deletekeys"] is True and doc["ssh_genkeytypes"] == ["ed25519"]
    assert doc["ssh_keys"]["ed25519_private"].strip() == pair.private_pem.strip()
    assert doc["ssh_keys"]["ed25519_public"] == pair.public_line
    # the rest of the document is untouched
    assert {k: v for k, v in doc.items() if k not in userdata.HOST_KEY_KEYS} == yaml.safe_load(
        render(role, **PARAMS[role]))
    assert len(text.encode()) <= userdata.AZURE_CUSTOM_DATA_LIMIT


def test_host_key_input_errors_are_one_line():
    from vtaplab.azure import ssh

    pair = ssh.generate_host_key()
    base = render("src")
    with pytest.raises(userdata.CloudInitError, match="not an OpenSSH private key") as caught:
        userdata.with_host_key(base, private_pem="secret-text", public_line=pair.public_line)
    assert "secret-text" not in str(caught.value)
    with pytest.raises(userdata.CloudInitError, match="not an Ed25519 public key"):
        userdata.with_host_key(base, private_pem=pair.private_pem, public_line="ssh-rsa x")
    once = userdata.with_host_key(base, private_pem=pair.private_pem,
                                  public_line=pair.public_line)
    with pytest.raises(userdata.CloudInitError, match="already sets ssh_deletekeys"):
        userdata.with_host_key(once, private_pem=pair.private_pem,
                               public_line=pair.public_line)


@pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip")), reason="needs root, iproute2")
def test_decap_boot_command_works_with_its_script(tmp_path, lab):
    """Run the rendered decap unit's ExecStart (script from user data) in a namespace of ours:
    one VXLAN interface per VNI given."""
    require_scripts("collector")
    doc = parsed("collector", decap_vnis="1001,1002")
    ns = lab.add_ns("col")
    _boot_command_applied(tmp_path, ns, doc, "/usr/local/sbin/vtap-decap.sh",
                          exec_start(doc, DECAP_UNIT))
    links = ns_run(ns, "ip", "-d", "-o", "link", "show", "type", "vxlan", timeout=10).stdout
    assert sorted(line.split(": ")[1].split("@")[0] for line in links.splitlines()) == [
        "vtap1001", "vtap1002"]
    assert "vxlan id 1001 " in links and "vxlan id 1002 " in links


# ----------------------------------------------------------------------------- proxy health

HEALTH_UNIT = "/etc/systemd/system/vtap-health.service"
HEALTH_PARAMS = {"pe_ip": "10.30.3.4", "mode": "netdev", "health_port": "8080"}


def test_proxy_behind_an_lb_runs_the_health_endpoint_bounded_on_every_boot():
    require_scripts("proxy")
    doc = parsed("proxy", **HEALTH_PARAMS)
    assert exec_start(doc, HEALTH_UNIT) == ("/usr/bin/python3 /usr/local/sbin/vtap-health.py "
                                      "--target 10.30.3.4 --port 8080")
    unit = files_of(doc)[HEALTH_UNIT]["content"]
    assert "WantedBy=multi-user.target" in unit and "After=network-online.target " \
        "vtap-proxy.service" in unit
    for bound in ("MemoryMax=", "CPUQuota=", "TasksMax=", "Restart=always"):
        assert bound in unit, bound
    entry = files_of(doc)["/usr/local/sbin/vtap-health.py"]
    assert entry["permissions"] == "0755"
    assert base64.b64decode(entry["content"]) == (
        userdata.TEMPLATE_DIR / "vtap-health.py").read_bytes()
    assert doc["runcmd"][-1] == ["systemctl", "enable", "--now", "vtap-health.service"]
    # the rewrite is unchanged by it
    assert exec_start(doc, PROXY_UNIT) == exec_start(parsed("proxy", pe_ip="10.30.3.4",
                                                            mode="netdev"), PROXY_UNIT)


def test_proxy_without_health_port_has_no_health_endpoint():
    require_scripts("proxy")
    doc = parsed("proxy", **PARAMS["proxy"])
    assert HEALTH_UNIT not in files_of(doc)
    text = render("proxy", **PARAMS["proxy"])
    assert "vtap-health.service" not in text and "/usr/local/sbin/vtap-health.py" not in text


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="Debian's cloud-init not installed")
def test_proxy_with_health_passes_cloud_init_schema(tmp_path):
    require_scripts("proxy")
    _text, pair = _with_key("proxy")
    path = tmp_path / "proxy.yaml"
    path.write_text(userdata.with_host_key(render("proxy", **HEALTH_PARAMS),
                                            private_pem=pair.private_pem,
                                            public_line=pair.public_line))
    result = subprocess.run(["cloud-init", "schema", "--config-file", str(path)],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Valid cloud-config" in output, output
    assert "deprecat" not in output.lower()
    assert len(path.read_bytes()) <= userdata.AZURE_CUSTOM_DATA_LIMIT


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_health_unit_passes_systemd_analyze(tmp_path):
    require_scripts("proxy")
    unit = files_of(parsed("proxy", **HEALTH_PARAMS))[HEALTH_UNIT]["content"]
    script = str(userdata.TEMPLATE_DIR / "vtap-health.py")
    path = tmp_path / "vtap-health.service"
    path.write_text(unit.replace("/usr/local/sbin/vtap-health.py", script))
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                            text=True, timeout=60)
    output = result.stdout + result.stderr
    # verify also reads the units After= names (vtap-proxy.service, not installed here).
    relevant = [line for line in output.splitlines() if "vtap-proxy.service" not in line]
    assert result.returncode == 0 or not relevant, output
    assert not any("ignoring" in line or "Unknown" in line for line in relevant), output


@pytest.mark.parametrize("port", ["0", "65536", "80a", "8080\nruncmd: [reboot]", ""])
def test_bad_health_port_is_refused_in_one_line(port):
    with pytest.raises(CloudInitError, match=r"health_port=.* is not a TCP port; accepted: "
                                             r"1\.\.65535"):
        render("proxy", pe_ip="10.30.3.4", mode="netdev", health_port=port)
