#!/usr/bin/env bash
# Installs the system packages dialcore needs, with apt, only when they are missing:
#   pkg-config + libopus-dev  (audiopus links the system libopus)
#   sip-tester                (SIPp, the SIP peer of the interop and end-to-end tests)
#   python3 + python3-venv    (the Pipecat agent test installs Pipecat from PyPI into a venv)
#   curl                      (the load scripts drive the service's REST API with it)
#   postgresql                (the store's second backend: pg-harness starts a throwaway
#                              server per test process; nothing is left running)
#   kamailio                  (the SIP load balancer in front of the cluster test's nodes)
set -euo pipefail

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists opus 2>/dev/null || missing+=(libopus-dev)
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v curl >/dev/null 2>&1 || missing+=(curl)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || missing+=(kamailio)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The Debian package starts a cluster of its own; the tests start their own servers, so
  # stop it rather than leave a database listening that nothing uses.
  if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    "${sudo_cmd[@]}" service postgresql stop >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" kamailio "* ]]; then
    "${sudo_cmd[@]}" service kamailio stop >/dev/null 2>&1 || true
  fi
fi
