#!/usr/bin/env bash
# Installs what `make bench` runs side by side, when it is missing: nginx-light (the target),
# Prometheus, Alertmanager, blackbox_exporter and wrk (Debian packages). Quiet when all is there.
# The benchmark starts its own copies on free 127.0.0.1 ports; it never uses running services.
set -uo pipefail

say() { echo "bench/setup: $*" >&2; }

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v prometheus-blackbox-exporter >/dev/null || missing+=(prometheus-blackbox-exporter)
command -v wrk >/dev/null || missing+=(wrk)

[ ${#missing[@]} -eq 0 ] && exit 0
if ! can_install; then
  say "missing: ${missing[*]} (install them with apt-get as root)"
  exit 1
fi
say "installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
