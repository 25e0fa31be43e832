"""The Azure credential for the lab's own ARM calls, chosen the way azure-native chooses its own.

The Python side (the rejected attempts' dynamic provider, the ``fastpath`` command, ``doctor``)
must work for whoever ``pulumi up`` works for. azure-native picks ONE method from its
configuration (``azure-native:*`` config, else ``ARM_*`` environment), in this order, and does
not fall through to the next when the chosen one fails (source: pulumi-azure-native
``provider/pkg/provider/auth_azidentity.go``, ``newSingleMethodAuthCredential``; its
registry page "Azure Native: Installation & Configuration", "Authentication Methods"):

1. ``useDefaultAzureCredential`` / ``ARM_USE_DEFAULT_AZURE_CREDENTIAL`` — azure-identity's chain;
2. client certificate: ``clientCertificatePath`` / ``ARM_CLIENT_CERTIFICATE_PATH``;
3. client secret: ``clientSecret`` / ``ARM_CLIENT_SECRET`` (+ client and tenant id);
4. OIDC: ``useOidc`` / ``ARM_USE_OIDC`` with ``ARM_OIDC_TOKEN``, ``ARM_OIDC_TOKEN_FILE_PATH``,
   or a token request URL + bearer (GitHub Actions' ``ACTIONS_ID_TOKEN_REQUEST_URL`` /
   ``_TOKEN``; ``ARM_OIDC_REQUEST_URL`` / ``_TOKEN`` as the registry page names them). The
   assertion is fetched afresh for every token request, so a run longer than the GitHub
   token's lifetime (about an hour) keeps working;
5. managed identity: ``useMsi`` / ``ARM_USE_MSI`` (``clientId`` picks a user-assigned one);
6. the Azure CLI (``az login``).

A failure raises :class:`CredentialError` with ONE line naming the method and where it was
configured, never a secret and never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# The audience GitHub's OIDC token is requested for, as Entra workload identity federation
# expects it (azure-native's default; Microsoft's "Configure a federated identity credential").
OIDC_AUDIENCE = "api://AzureADTokenExchange"
# Renew a cached token this many seconds before it expires.
_RENEW_MARGIN = 300.0
_OIDC_FETCH_TIMEOUT = 30.0

# (azure-native config key, environment variables in the order azure-native reads them)
_SETTINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "client_id": ("clientId", ("ARM_CLIENT_ID",)),
    "tenant_id": ("tenantId", ("ARM_TENANT_ID",)),
    "client_secret": ("clientSecret", ("ARM_CLIENT_SECRET",)),
    "client_certificate_path": ("clientCertificatePath", ("ARM_CLIENT_CERTIFICATE_PATH",)),
    "client_certificate_password": ("clientCertificatePassword",
                                    ("ARM_CLIENT_CERTIFICATE_PASSWORD",)),
    "use_default": ("useDefaultAzureCredential", ("ARM_USE_DEFAULT_AZURE_CREDENTIAL",)),
    "use_oidc": ("useOidc", ("ARM_USE_OIDC",)),
    "oidc_token": ("oidcToken", ("ARM_OIDC_TOKEN",)),
    "oidc_token_file_path": ("oidcTokenFilePath", ("ARM_OIDC_TOKEN_FILE_PATH",)),
    "oidc_request_url": ("oidcRequestUrl",
                         ("ACTIONS_ID_TOKEN_REQUEST_URL", "ARM_OIDC_REQUEST_URL")),
    "oidc_request_token": ("oidcRequestToken",
                           ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ARM_OIDC_REQUEST_TOKEN")),
    "oidc_audience": ("oidcAudience", ("ARM_OIDC_AUDIENCE",)),
    "use_msi": ("useMsi", ("ARM_USE_MSI",)),
}
_SECRET_SETTINGS = ("client_secret", "client_certificate_password", "oidc_token",
                    "oidc_request_token")

TokenProvider = Callable[[], str]

# azure-identity logs its own "<Credential>.get_token failed: ..." warning before raising; with
# no logging configured Python prints it to stderr, a second line next to ours. While one of
# OUR calls runs, azure.identity logs errors only: the CredentialError says it in one line.
_QUIET_LOCK = threading.Lock()
_quiet = {"depth": 0, "previous": logging.NOTSET}


@contextlib.contextmanager
def _identity_quiet() -> Iterator[None]:
    logger = logging.getLogger("azure.identity")
    with _QUIET_LOCK:
        if _quiet["depth"] == 0:
            _quiet["previous"] = logger.level
            logger.setLevel(max(logger.level, logging.ERROR))
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                logger.setLevel(_quiet["previous"])


class CredentialError(RuntimeError):
    """Authentication failed or is misconfigured; ``str()`` is one secret-free line."""


@dataclass(frozen=True)
class AuthSettings:
    """The resolved settings: each value and where it came from (``azure-native:clientId``,
    ``$ARM_CLIENT_ID``)."""

    values: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str:
        return self.values.get(name, "")

    def flag(self, name: str) -> bool:
        return self.get(name).strip().lower() == "true"

    def where(self, *names: str) -> str:
        return ", ".join(self.sources[n] for n in names if n in self.sources)


def read_settings(config: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> AuthSettings:
    """Config first (keys ``azure-native:clientId`` or bare ``clientId``), then the
    environment, as azure-native's ``getConfig(configName, envName)`` does."""
    config = config or {}
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name, (key, env_names) in _SETTINGS.items():
        for cfg_key in (f"azure-native:{key}", key):
            value = config.get(cfg_key)
            if value not in (None, ""):
                values[name], sources[name] = str(value), f"azure-native:{key}"
                break
        else:
            for env in env_names:
                if environ.get(env):
                    values[name], sources[name] = environ[env], f"${env}"
                    break
    return AuthSettings(values, sources)


@dataclass
class Chosen:
    """The one method chosen: its name, where it was configured, and the credential."""

    method: str
    where: str
    credential: Any


def choose(settings: AuthSettings, *,
           fetch: Callable[[urllib.request.Request, float], bytes] | None = None) -> Chosen:
    """The credential azure-native would use for ``settings`` (see the module docstring)."""
    import azure.identity as identity

    s = settings
    tenant, client = s.get("tenant_id"), s.get("client_id")

    def need(method: str, *names: str) -> None:
        missing = [_SETTINGS[n][1][0] for n in names if not s.get(n)]
        if missing:
            raise CredentialError(f"{method} authentication needs {' and '.join(missing)} "
                                  f"(or azure-native config); it was chosen by "
                                  f"{_chosen_by(s, method)}")

    if s.flag("use_default"):
        return Chosen("DefaultAzureCredential", s.where("use_default"),
                      identity.DefaultAzureCredential())
    if s.get("client_certificate_path"):
        need("service principal (certificate)", "tenant_id", "client_id")
        return Chosen("service principal (certificate)",
                      s.where("client_certificate_path", "client_id", "tenant_id"),
                      identity.CertificateCredential(
                          tenant, client, s.get("client_certificate_path"),
                          password=s.get("client_certificate_password") or None))
    if s.get("client_secret"):
        need("service principal (client secret)", "tenant_id", "client_id")
        return Chosen("service principal (client secret)",
                      s.where("client_secret", "client_id", "tenant_id"),
                      identity.ClientSecretCredential(tenant, client, s.get("client_secret")))
    if s.flag("use_oidc"):
        need("OIDC", "tenant_id", "client_id")
        assertion, where = _oidc_assertion(s, fetch or _http_fetch)
        return Chosen("OIDC (workload identity federation)", where,
                      identity.ClientAssertionCredential(tenant, client, assertion))
    if s.flag("use_msi"):
        return Chosen("managed identity", s.where("use_msi", "client_id"),
                      identity.ManagedIdentityCredential(
                          **({"client_id": client} if client else {})))
    return Chosen("Azure CLI", "no ARM_* credential set (az login)",
                  identity.AzureCliCredential(**({"tenant_id": tenant} if tenant else {})))


def token_provider(scope: str, *, config: Mapping[str, Any] | None = None,
                   environ: Mapping[str, str] | None = None,
                   clock: Callable[[], float] = time.time,
                   fetch: Callable[[urllib.request.Request, float], bytes] | None = None
                   ) -> TokenProvider:
    """A bearer-token provider for ``scope``, cached until five minutes before expiry. The
    credential is chosen at the first call (so building an ArmClient needs no login)."""
    settings = read_settings(config, environ)
    secrets = [settings.get(n) for n in _SECRET_SETTINGS if settings.get(n)]
    state: dict[str, Any] = {}

    def token() -> str:
        if state.get("token") and state["expires_on"] - _RENEW_MARGIN > clock():
            return str(state["token"])
        if "chosen" not in state:
            state["chosen"] = choose(settings, fetch=fetch)
        chosen: Chosen = state["chosen"]
        try:
            with _identity_quiet():
                access = chosen.credential.get_token(scope)
        except CredentialError:
            raise
        except Exception as exc:  # azure-identity raises several types; all mean "no token"
            raise CredentialError(
                f"Azure authentication failed: {chosen.method} (from {chosen.where}): "
                f"{_one_line(str(exc), secrets)}") from None
        state["token"], state["expires_on"] = access.token, float(access.expires_on)
        return str(access.token)

    return token


def _chosen_by(s: AuthSettings, method: str) -> str:
    key = {"service principal (certificate)": "client_certificate_path",
           "service principal (client secret)": "client_secret",
           "OIDC": "use_oidc"}.get(method, "")
    return s.sources.get(key, "the configuration")


def _oidc_assertion(s: AuthSettings, fetch: Callable[[urllib.request.Request, float], bytes]
                    ) -> tuple[Callable[[], str], str]:
    """The client-assertion callable for OIDC; called by azure-identity for EVERY new access
    token, so each gets a fresh ID token (GitHub's expire; a static one cannot be renewed)."""
    if s.get("oidc_token"):
        static = s.get("oidc_token")
        return (lambda: static), s.where("use_oidc", "oidc_token")
    if s.get("oidc_token_file_path"):
        path = s.get("oidc_token_file_path")

        def from_file() -> str:
            # Re-read each time: federated token files are rotated in place.
            try:
                with open(path, encoding="utf-8") as fh:
                    return fh.read().strip()
            except OSError as exc:
                raise CredentialError(f"OIDC token file {path}: {exc.strerror}") from None
        return from_file, s.where("use_oidc", "oidc_token_file_path")
    url, bearer = s.get("oidc_request_url"), s.get("oidc_request_token")
    if not (url and bearer):
        raise CredentialError(
            f"OIDC authentication (chosen by {_chosen_by(s, 'OIDC')}) needs ARM_OIDC_TOKEN, "
            "ARM_OIDC_TOKEN_FILE_PATH, or ACTIONS_ID_TOKEN_REQUEST_URL and "
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN (GitHub Actions with 'id-token: write')")
    audience = s.get("oidc_audience") or OIDC_AUDIENCE

    def from_request() -> str:
        parts = urllib.parse.urlsplit(url)
        query = [*urllib.parse.parse_qsl(parts.query), ("audience", audience)]
        request = urllib.request.Request(
            urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query))),
            headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"})
        try:
            body = json.loads(fetch(request, _OIDC_FETCH_TIMEOUT))
        except urllib.error.HTTPError as exc:
            raise CredentialError(f"OIDC token request to {parts.netloc} answered HTTP "
                                  f"{exc.code}") from None
        except (OSError, ValueError) as exc:
            raise CredentialError(f"OIDC token request to {parts.netloc} failed: "
                                  f"{type(exc).__name__}") from None
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise CredentialError(f"OIDC token request to {parts.netloc}: no 'value' in the "
                                  "answer")
        return value
    return from_request, s.where("use_oidc", "oidc_request_url")


def _http_fetch(request: urllib.request.Request, timeout: float) -> bytes:
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return bytes(resp.read())


def _one_line(text: str, secrets: list[str]) -> str:
    """The first meaningful line of an azure-identity message, secrets masked, bounded."""
    for secret in secrets:
        text = text.replace(secret, "***")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else "no detail"
    return line[:300]
