#!/usr/bin/env bash
# Installs the system packages dialcore needs, with apt, only when they are missing:
#   pkg-config + libopus-dev  (audiopus links the system libopus)
#   sip-tester                (SIPp, the SIP peer of the interop and end-to-end tests)
#   python3 + python3-venv    (the Pipecat agent test installs Pipecat from PyPI into a venv)
#   curl                      (the load scripts drive the service's REST API with it)
set -euo pipefail

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists opus 2>/dev/null || missing+=(libopus-dev)
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v curl >/dev/null 2>&1 || missing+=(curl)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
