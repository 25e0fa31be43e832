"""The credential chosen the way azure-native chooses it, with fake environments and loopback
token endpoints (a GitHub-shaped OIDC token service and an App Service-shaped managed identity
endpoint, both real HTTP on 127.0.0.1, driven by azure-identity's own code where it allows
plain HTTP)."""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers.fake_arm import FakeArm, fixture

from vtaplab.azure import attempts, credentials, fastpath
from vtaplab.azure.arm import ARM_SCOPE, ArmClient

SECRET = "s3cr3t-client-value-77"
IDS = {"ARM_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
       "ARM_TENANT_ID": "22222222-2222-2222-2222-222222222222"}


def send_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    """Answer ``body`` as JSON: both loopback endpoints below reply the same way."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class LoopbackServer:
    """A threaded server on 127.0.0.1 (any free port), optionally behind TLS; ``close`` stops it."""

    def _start(self, handler: type[BaseHTTPRequestHandler],
               tls: ssl.SSLContext | None = None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "http" if tls is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class TokenServer(LoopbackServer):
    """A loopback endpoint answering each GET with ``answer(n, path, query, headers)``."""

    def __init__(self, answer: Any) -> None:
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                req = {"path": parts.path, "query": parse_qs(parts.query),
                       "headers": dict(self.headers)}
                server.requests.append(req)
                status, body = answer(len(server.requests), req)
                send_json(self, status, body)

        self._start(Handler)


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("ARM_", "AZURE_", "ACTIONS_ID_TOKEN", "IDENTITY_", "MSI_",
                            "IMDS_")):
            monkeypatch.delenv(name)
    return monkeypatch


# --- which method: azure-native's order -----------------------------------------------------

@pytest.mark.parametrize("env, method", [
    ({}, "Azure CLI"),
    ({"ARM_USE_MSI": "true"}, "managed identity"),
    ({"ARM_USE_OIDC": "true", "ARM_OIDC_TOKEN": "jwt", **IDS},
     "OIDC (workload identity federation)"),
    # A secret wins over OIDC and MSI, as in azure-native's newSingleMethodAuthCredential.
    ({"ARM_CLIENT_SECRET": SECRET, "ARM_USE_OIDC": "true", "ARM_USE_MSI": "true", **IDS},
     "service principal (client secret)"),
    ({"ARM_USE_DEFAULT_AZURE_CREDENTIAL": "true", "ARM_CLIENT_SECRET": SECRET, **IDS},
     "DefaultAzureCredential"),
])
def test_the_method_is_chosen_in_azure_natives_order(env, method):
    chosen = credentials.choose(credentials.read_settings({}, env))
    assert chosen.method == method


def test_azure_native_config_wins_over_the_environment():
    settings = credentials.read_settings(
        {"azure-native:clientId": "from-config", "azure-native:clientSecret": SECRET,
         "azure-native:tenantId": "t"},
        {"ARM_CLIENT_ID": "from-env", "ARM_USE_MSI": "true"})
    assert settings.get("client_id") == "from-config"
    chosen = credentials.choose(settings)
    assert chosen.method == "service principal (client secret)"
    assert chosen.where == "azure-native:clientSecret, azure-native:clientId, azure-native:tenantId"
    assert SECRET not in chosen.where


def test_a_chosen_method_missing_its_ids_is_one_line_naming_them():
    with pytest.raises(credentials.CredentialError) as info:
        credentials.choose(credentials.read_settings({}, {"ARM_CLIENT_SECRET": SECRET}))
    text = str(info.value)
    assert "ARM_TENANT_ID" in text and "ARM_CLIENT_ID" in text and "\n" not in text
    assert SECRET not in text


def test_oidc_without_a_token_source_says_what_is_needed():
    with pytest.raises(credentials.CredentialError, match="ACTIONS_ID_TOKEN_REQUEST_URL"):
        credentials.choose(credentials.read_settings({}, {"ARM_USE_OIDC": "true", **IDS}))


# --- OIDC: a fresh assertion for every token request ----------------------------------------

def test_github_oidc_assertion_is_fetched_afresh_each_time(clean_env):
    server = TokenServer(lambda n, req: (200, {"count": 1, "value": f"github-jwt-{n}"}))
    try:
        env = {"ARM_USE_OIDC": "true", **IDS,
               "ACTIONS_ID_TOKEN_REQUEST_URL": f"{server.url}/token?api-version=2.0",
               "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-bearer"}
        chosen = credentials.choose(credentials.read_settings({}, env))
        assert type(chosen.credential).__name__ == "ClientAssertionCredential"
        # The callable azure-identity calls "every time it acquires a new token" (its
        # ClientAssertionCredential docstring).
        assertion = chosen.credential._func
        assert [assertion(), assertion()] == ["github-jwt-1", "github-jwt-2"]
    finally:
        server.close()
    (first, second) = server.requests
    assert first["query"] == {"api-version": ["2.0"], "audience": ["api://AzureADTokenExchange"]}
    assert first["headers"]["Authorization"] == "Bearer runner-bearer"
    assert second["path"] == "/token"


def test_oidc_request_failure_is_one_line_without_the_bearer(clean_env):
    server = TokenServer(lambda n, req: (401, {"message": "Bearer runner-bearer rejected"}))
    try:
        env = {"ARM_USE_OIDC": "true", **IDS, "ARM_OIDC_REQUEST_URL": f"{server.url}/t",
               "ARM_OIDC_REQUEST_TOKEN": "runner-bearer"}
        provider = credentials.token_provider(ARM_SCOPE, environ=env)
        with pytest.raises(credentials.CredentialError) as info:
            provider()
    finally:
        server.close()
    text = str(info.value)
    assert "OIDC" in text and "401" in text and "\n" not in text
    assert "runner-bearer" not in text


# --- managed identity: azure-identity's own client over loopback ----------------------------

def _msi_answer(n: int, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if req["headers"].get("X-IDENTITY-HEADER") != "msi-header":
        return 401, {"error": "no header"}
    return 200, {"access_token": f"msi-token-{n}", "expires_on": str(int(time.time()) + 3600),
                 "resource": "https://management.azure.com", "token_type": "Bearer"}


def test_managed_identity_token_comes_from_the_identity_endpoint(clean_env):
    server = TokenServer(_msi_answer)
    try:
        clean_env.setenv("IDENTITY_ENDPOINT", f"{server.url}/msi/token")
        clean_env.setenv("IDENTITY_HEADER", "msi-header")
        provider = credentials.token_provider(ARM_SCOPE, environ={"ARM_USE_MSI": "true"})
        assert provider() == "msi-token-1"
        assert provider() == "msi-token-1"  # cached until five minutes before expiry
    finally:
        server.close()
    assert len(server.requests) == 1
    assert server.requests[0]["query"]["resource"] == ["https://management.azure.com"]


def test_managed_identity_failure_is_the_error_outcome_of_an_attempt(clean_env, tmp_path,
                                                                    caplog):
    server = TokenServer(lambda n, req: (400, {"error": "invalid_request",
                                               "error_description": "no identity assigned"}))
    arm = FakeArm()
    arm.add("GET", fixture("private-endpoint.json")["id"], 200, fixture("private-endpoint.json"))
    try:
        clean_env.setenv("IDENTITY_ENDPOINT", f"{server.url}/msi/token")
        clean_env.setenv("IDENTITY_HEADER", "msi-header")
        client = ArmClient(base_url=arm.base_url, token_provider=credentials.token_provider(
            ARM_SCOPE, environ={"ARM_USE_MSI": "true"}), sleep=lambda s: None)
        out = attempts.attempt_r1(
            client, private_endpoint_id=fixture("private-endpoint.json")["id"],
            vtap_id="/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/"
                    "virtualNetworkTaps/v", location="uksouth", evidence_dir=tmp_path,
            root=tmp_path)
    finally:
        server.close()
        arm.close()
    assert out.outcome == "error" and out.arm_code == "AuthenticationFailed"
    assert out.arm_message.startswith(
        "Azure authentication failed: managed identity (from $ARM_USE_MSI)")
    assert "\n" not in out.arm_message and "Traceback" not in out.arm_message
    assert arm.requests == []  # nothing reached ARM without a token
    verdict = attempts.scenario_verdict("r1", [out], root=tmp_path)
    assert verdict["outcome"] == "error" and verdict["matches_expected"] is False
    assert verdict["reason"].startswith("AuthenticationFailed: Azure authentication failed: "
                                        "managed identity (from $ARM_USE_MSI)")
    assert "\n" not in verdict["reason"]
    # azure-identity's own "get_token failed" warning is not printed next to our line.
    assert not [r for r in caplog.records if r.name.startswith("azure.identity")
                and r.levelno >= logging.WARNING]


def test_a_failing_credential_is_one_line_with_secrets_masked(clean_env):
    from azure.core.exceptions import ClientAuthenticationError

    provider = credentials.token_provider(ARM_SCOPE, environ={"ARM_CLIENT_SECRET": SECRET,
                                                              **IDS})

    class Failing:
        def get_token(self, *scopes: str) -> Any:
            raise ClientAuthenticationError(
                f"AADSTS7000215: Invalid client secret provided ({SECRET}).\nTrace ID: x\n"
                "Correlation ID: y")

    chosen = credentials.Chosen("service principal (client secret)", "$ARM_CLIENT_SECRET",
                                Failing())
    original = credentials.choose
    credentials.choose = lambda s, fetch=None: chosen  # type: ignore[assignment]
    try:
        with pytest.raises(credentials.CredentialError) as info:
            provider()
    finally:
        credentials.choose = original  # type: ignore[assignment]
    assert str(info.value) == ("Azure authentication failed: service principal (client "
                               "secret) (from $ARM_CLIENT_SECRET): AADSTS7000215: Invalid "
                               "client secret provided (***).")


def test_fastpath_without_a_usable_credential_prints_one_line(clean_env, capsys):
    clean_env.setenv("ARM_CLIENT_SECRET", SECRET)  # chosen, but no tenant/client id
    rc = fastpath.main([
        "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and "AuthenticationFailed" in err and "ARM_TENANT_ID" in err
    assert SECRET not in err and "Traceback" not in err


def test_the_dynamic_provider_authenticates_with_azure_native_config(clean_env):
    """The engine hands the provider host the stack config (pulumi.dynamic's Configure);
    ``azure-native:*`` keys there choose the credential, as they do for azure-native."""
    from pulumi.dynamic.config import Config
    from pulumi.dynamic.dynamic import ConfigureRequest

    from components.rejected_attempt import AttemptProvider

    provider = AttemptProvider()
    provider.configure(ConfigureRequest(Config(
        {"azure-native:clientId": "c", "azure-native:tenantId": "t",
         "azure-native:clientSecret": SECRET, "vtaplab:scenarios": ["r1"]}, "vtaplab")))
    client = provider._client()
    chosen = credentials.choose(credentials.read_settings(provider._auth_config, {}))
    assert chosen.method == "service principal (client secret)"
    assert SECRET not in repr(client)


# --- OIDC end to end: azure-identity's own token client against a loopback Entra ----------------

class HttpsTokenEndpoint(LoopbackServer):
    """A loopback ``/{tenant}/oauth2/v2.0/token`` over TLS (azure-identity refuses a plain
    HTTP authority), with a throw-away self-signed certificate for 127.0.0.1."""

    def __init__(self, tmp_path: Any) -> None:
        import datetime as dt
        import ipaddress

        # cryptography comes with azure-identity (msal): no openssl binary needed.
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        private = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(private.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(private, hashes.SHA256()))
        self.cert = tmp_path / "cert.pem"
        key = tmp_path / "key.pem"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        self.forms: list[dict[str, list[str]]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                endpoint.forms.append({"path": [self.path], **form})
                # expires_in 0: the token is stale at once, so the next get_token asks again
                # (what happens to every token after an hour in a long run).
                send_json(self, 200, {"token_type": "Bearer", "expires_in": 0,
                                      "access_token": f"arm-token-{len(endpoint.forms)}"})

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(key))
        self._start(Handler, context)


def test_each_arm_token_is_bought_with_a_fresh_github_assertion(clean_env, tmp_path):
    github = TokenServer(lambda n, req: (200, {"count": 1, "value": f"github-jwt-{n}"}))
    entra = HttpsTokenEndpoint(tmp_path)
    try:
        clean_env.setenv("AZURE_AUTHORITY_HOST", entra.url)
        clean_env.setenv("REQUESTS_CA_BUNDLE", str(entra.cert))
        env = {"ARM_USE_OIDC": "true", **IDS,
               "ACTIONS_ID_TOKEN_REQUEST_URL": f"{github.url}/token",
               "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-bearer"}
        provider = credentials.token_provider(ARM_SCOPE, environ=env)
        tokens = [provider(), provider()]
    finally:
        entra.close()
        github.close()
    assert tokens == ["arm-token-1", "arm-token-2"]
    assert len(github.requests) == 2  # one GitHub ID token per ARM token
    assert [f["client_assertion"] for f in entra.forms] == [["github-jwt-1"], ["github-jwt-2"]]
    assert entra.forms[0]["path"] == [f"/{IDS['ARM_TENANT_ID']}/oauth2/v2.0/token"]
    assert entra.forms[0]["client_id"] == [IDS["ARM_CLIENT_ID"]]
    assert entra.forms[0]["scope"] == [ARM_SCOPE]
