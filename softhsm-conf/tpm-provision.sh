#!/usr/bin/env bash
# A TPM 2.0 token for tests: a software TPM (swtpm) on localhost, a private
# resource manager, a tpm2-pkcs11 store with an RSA-2048 and a P-256 key,
# and S/MIME certificates for both from a throwaway CA, all in DIR.
#
#   tpm-provision.sh DIR      start everything, provision; writes DIR/env
#   DIR/stop                  stop the daemons this script started
#
# Nothing system-wide is used or changed: no /dev/tpm*, no system D-Bus, no
# /etc/tpm2_pkcs11.  Pieces (Debian 12 packages):
#   swtpm (swtpm, swtpm-tools)  the TPM, its socket interface on two free TCP
#                               ports; state in DIR/tpm
#   dbus-daemon (dbus)          a private session bus at DIR/bus
#   tpm2-abrmd (tpm2-abrmd, libtss2-tcti-tabrmd0)
#                               the resource manager on that bus.  tpm2-pkcs11
#                               and tpm2_ptool keep several objects loaded,
#                               swtpm holds three: talking to swtpm directly
#                               (TCTI swtpm:port=N) runs out of object slots
#                               ("out of memory for object contexts") in
#                               the first tpm2_ptool addkey
#   tpm2_ptool (libtpm2-pkcs11-tools), tpm2-tools
#                               the store DIR/store (TPM2_PKCS11_STORE)
#   libtpm2_pkcs11.so (libtpm2-pkcs11-1)
#                               the PKCS#11 module, for pkcs11-tool here and
#                               for p11smime --module in the tests
#
# DIR/env sets: TPM2_PKCS11_TCTI, TPM2TOOLS_TCTI, TPM2_PKCS11_STORE,
# DBUS_SESSION_BUS_ADDRESS, P11S_TPM_MODULE, P11S_TPM_LABEL (p11s-tpm),
# P11S_TPM_PIN_FILE (user PIN 123456; SO PIN 12345678), P11S_TPM_CA_DIR,
# P11S_TPM_CERTS.  Keys (made by tpm2_ptool addkey; its --id is taken as
# text, so the CKA_ID is the bytes of "01"):
#   CKA_ID "01" (hex 3031) label rsa2048  RSA 2048   rsa2048@example.org
#   CKA_ID "03" (hex 3033) label p256     EC P-256   p256@example.org
# Takes about 8 s.
set -euo pipefail
trap 'echo "tpm-provision.sh: failed at line $LINENO" >&2' ERR

die() {
	echo "tpm-provision.sh: $*" >&2
	exit 1
}

[ $# = 1 ] || die "usage: tpm-provision.sh DIR"
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
dir=$(cd "$1" && pwd)
[ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
for t in swtpm dbus-daemon tpm2-abrmd tpm2_ptool tpm2_getcap pkcs11-tool openssl python3; do
	command -v "$t" >/dev/null || die "$t is missing (tools/install-deps.sh installs it)"
done
module=${P11S_TPM_MODULE:-/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so}
[ -f "$module" ] || die "$module is missing (package libtpm2-pkcs11-1)"

mkdir -p "$dir/tpm" "$dir/store" "$dir/ca" "$dir/certs" "$dir/log"
: >"$dir/pids"
# stop: what was started, by pid, latest first.
cat >"$dir/stop" <<EOF
#!/bin/sh
for p in \$(tac "$dir/pids" 2>/dev/null); do kill "\$p" 2>/dev/null; done
: >"$dir/pids"
EOF
chmod +x "$dir/stop"
# Whatever stops the script stops what it started.
trap 'rc=$?; [ $rc = 0 ] || "$dir/stop"; exit $rc' EXIT

# Two free ports next to each other: the swtpm TCTI finds the control
# port at port + 1.  They are free when looked at, not when swtpm binds
# them: another test starting a server in between takes them, so a few
# tries.
free_ports() {
	python3 -c '
import socket
for _ in range(100):
    a, b = socket.socket(), socket.socket()
    a.bind(("127.0.0.1", 0))
    p = a.getsockname()[1]
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        continue
    print(p, p + 1)
    break'
}
started=
for try in 1 2 3 4 5; do
	read -r port ctrl < <(free_ports)
	[ -n "${ctrl:-}" ] || die "no two free ports next to each other"
	if swtpm socket --tpm2 --tpmstate dir="$dir/tpm" \
		--server type=tcp,port="$port",bindaddr=127.0.0.1 \
		--ctrl type=tcp,port="$ctrl",bindaddr=127.0.0.1 \
		--flags not-need-init,startup-clear --pid file="$dir/swtpm.pid" \
		--log file="$dir/log/swtpm.log" --daemon; then
		started=1
		break
	fi
done
[ -n "$started" ] || die "swtpm did not start (see $dir/log/swtpm.log)"
cat "$dir/swtpm.pid" >>"$dir/pids"
echo >>"$dir/pids"

dbus-daemon --session --address="unix:path=$dir/bus" --fork \
	--print-address=3 --print-pid=4 3>"$dir/bus.address" 4>>"$dir/pids"
bus=$(head -n1 "$dir/bus.address")

root=()
[ "$(id -u)" = 0 ] && root=(--allow-root)
DBUS_SESSION_BUS_ADDRESS=$bus setsid tpm2-abrmd --session "${root[@]}" \
	--dbus-name=org.p11smime.Tabrmd --tcti="swtpm:host=127.0.0.1,port=$port" \
	</dev/null >"$dir/log/abrmd.log" 2>&1 &
echo $! >>"$dir/pids"

tcti="tabrmd:bus_type=session,bus_name=org.p11smime.Tabrmd"
cat >"$dir/env" <<EOF
export DBUS_SESSION_BUS_ADDRESS='$bus'
export TPM2TOOLS_TCTI='$tcti'
export TPM2_PKCS11_TCTI='$tcti'
export TPM2_PKCS11_STORE='$dir/store'
export TPM2_PKCS11_LOG_LEVEL=0
export P11S_TPM_MODULE='$module'
export P11S_TPM_LABEL=p11s-tpm
export P11S_TPM_PIN_FILE='$dir/pin'
export P11S_TPM_CA_DIR='$dir/ca'
export P11S_TPM_CERTS='$dir/certs'
export P11S_TPM_PORT=$port
EOF
# shellcheck disable=SC1091
. "$dir/env"
echo 123456 >"$dir/pin"

# The resource manager registers its name a moment after it starts.
for _ in $(seq 50); do
	tpm2_getcap properties-fixed >/dev/null 2>&1 && break
	sleep 0.2
done
tpm2_getcap properties-fixed >/dev/null 2>"$dir/log/getcap.err" ||
	die "the resource manager does not answer (see $dir/log)"

{
	tpm2_ptool init --path="$dir/store"
	tpm2_ptool addtoken --pid=1 --label=p11s-tpm --sopin=12345678 --userpin=123456 --path="$dir/store"
	tpm2_ptool addkey --label=p11s-tpm --key-label=rsa2048 --id=01 --algorithm=rsa2048 \
		--userpin=123456 --path="$dir/store"
	tpm2_ptool addkey --label=p11s-tpm --key-label=p256 --id=03 --algorithm=ecc256 \
		--userpin=123456 --path="$dir/store"
} >"$dir/log/ptool.log" 2>&1 || die "tpm2_ptool failed (see $dir/log/ptool.log)"

# A throwaway CA, as provision.sh makes for SoftHSM.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca/ca.key" -out "$dir/ca/ca.pem" \
	-days 3650 -subj "/CN=p11smime TPM test CA" \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
	2>/dev/null

for k in rsa2048:3031:smime-rsa p256:3033:smime-ec; do
	IFS=: read -r label id profile <<<"$k"
	pkcs11-tool --module "$module" --token-label p11s-tpm --read-object --type pubkey \
		--label "$label" -o "$dir/certs/$label.pub.der" >/dev/null 2>>"$dir/log/pkcs11-tool.log"
	openssl pkey -pubin -inform DER -in "$dir/certs/$label.pub.der" -out "$dir/certs/$label.pub.pem"
	bash "$here/issue-cert.sh" --ca-dir "$dir/ca" --key "pub:$dir/certs/$label.pub.pem" \
		--out "$dir/certs/$label.pem" --profile "$profile" --email "$label@example.org" \
		--cn "p11smime TPM $label" >>"$dir/log/issue.log" 2>&1
	openssl x509 -in "$dir/certs/$label.pem" -outform DER -out "$dir/certs/$label.der"
	pkcs11-tool --module "$module" --token-label p11s-tpm --login --pin 123456 \
		--write-object "$dir/certs/$label.der" --type cert --id "$id" --label "$label" \
		>/dev/null 2>>"$dir/log/pkcs11-tool.log"
done
touch "$dir/.p11smime-tpm"
echo "tpm-provision.sh: token p11s-tpm ready; . $dir/env; stop with $dir/stop"
