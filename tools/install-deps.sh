#!/usr/bin/env bash
# Install the Debian 12 packages p11smime builds, tests and demos with.
# Only what is missing is installed; nothing happens when all are there.
set -euo pipefail

packages=(
	build-essential cmake pkg-config
	libssl-dev libp11-dev libp11-kit-dev p11-kit p11-kit-modules libjansson-dev libcmocka-dev
	softhsm2 opensc libengine-pkcs11-openssl
	gnutls-bin gpgsm libnss3-tools
	python3 perl time jq openssl gpg-agent strace
	neomutt tmux mailcap locales
	libmilter-dev postfix
	swtpm swtpm-tools tpm2-abrmd libtss2-tcti-tabrmd0 libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-tools dbus
	libnss3
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "install-deps: need root or sudo for: ${missing[*]}" >&2; exit 1; }
	sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
$sudo apt-get update -q
# postfix (the milter test's MTA) must not configure or start a system MTA:
# its tests run private instances on loopback ports (postfix -c DIR).
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
