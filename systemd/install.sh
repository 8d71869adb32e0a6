#!/bin/sh
# Install or upgrade gateagent on a Raspberry Pi OS (Debian 12) gate, from this checkout.
#
#   sudo ./systemd/install.sh
#
# Offline (a gate without internet): build a wheelhouse where there is internet with
# `pip wheel -w wheels .` in this checkout, copy it over, and run
#   sudo GATEAGENT_WHEELS=/path/to/wheels ./systemd/install.sh
#
# Idempotent: running it again upgrades the program and the unit, and keeps the
# configuration, the token and the tap database. See README "Installing on a Pi".
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/gateagent
etc=/etc/gateagent

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run it as root (sudo ./systemd/install.sh)" >&2
    exit 2
fi

# PyPI has no ARM wheel of evdev: Debian's python3-evdev is used through
# --system-site-packages instead of compiling it on the Pi.
missing=""
for package in python3-venv python3-evdev; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing="$missing $package"
done
# Feedback on the GPIO (README "Feedback at the gate"): Debian's gpiozero and its lgpio
# pin library (a Pi 5 has no other), through --system-site-packages as evdev, where the
# distribution has them (Raspberry Pi OS does). gateagent imports them only when a
# [feedback] pin is configured.
for package in python3-gpiozero python3-lgpio; do
    if apt-cache show "$package" >/dev/null 2>&1; then
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
            || missing="$missing $package"
    fi
done
if [ -n "$missing" ]; then
    apt-get update
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y --no-install-recommends $missing
fi

if [ ! -x "$prefix/venv/bin/python" ]; then
    python3 -m venv --system-site-packages "$prefix/venv"
fi
pip="$prefix/venv/bin/python -m pip --quiet --disable-pip-version-check"
if [ -n "${GATEAGENT_WHEELS:-}" ]; then
    what="--no-index --find-links $GATEAGENT_WHEELS gateagent"
else
    what=$src
fi
# Dependencies first, then gateagent itself again even if its version number did not
# change (an upgrade from a newer checkout); never evdev, which Debian provides.
# shellcheck disable=SC2086 # $what is options and a requirement
$pip install --upgrade $what
# shellcheck disable=SC2086
$pip install --force-reinstall --no-deps $what
install -m 0644 "$src/README.md" "$src/config.example.toml" "$prefix/"
ln -sf "$prefix/venv/bin/gateagent" /usr/local/bin/gateagent

install -D -m 0644 "$src/systemd/gateagent.sysusers" /etc/sysusers.d/gateagent.conf
systemd-sysusers /etc/sysusers.d/gateagent.conf

# Metrics for node_exporter's textfile collector (README "Monitoring many gates"): its
# directory belongs to root, so let the gateagent group add files there. A statoverride,
# because dpkg would reset a plain chmod at the next upgrade of prometheus-node-exporter;
# the sticky bit keeps gateagent from removing other collectors' files. An override an
# admin made is kept. Without node_exporter nothing is done: install it, then run this again.
textfiles=/var/lib/prometheus/node-exporter
if [ -d "$textfiles" ] && ! dpkg-statoverride --list "$textfiles" >/dev/null; then
    dpkg-statoverride --update --add root gateagent 1775 "$textfiles"
fi

install -d -m 0755 "$etc"
if [ ! -f "$etc/config.toml" ]; then
    install -m 0640 -g gateagent "$src/config.example.toml" "$etc/config.toml"
    echo "install.sh: wrote $etc/config.toml from the example: edit it"
fi
if [ ! -f "$etc/token" ]; then
    # Read by systemd (LoadCredential=) as root, handed to the service privately.
    install -m 0600 /dev/null "$etc/token"
    echo "install.sh: put the server's token in $etc/token"
fi

install -m 0644 "$src/systemd/gateagent.service" /etc/systemd/system/gateagent.service
systemctl daemon-reload
if systemctl is-active --quiet gateagent; then
    systemctl restart gateagent
    echo "install.sh: gateagent upgraded and restarted"
else
    echo "install.sh: installed. Next: gateagent readers, gateagent listen, gateagent check,"
    echo "            then: systemctl enable --now gateagent"
fi
