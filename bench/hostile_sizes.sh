#!/usr/bin/env bash
# Benchmark: hostile sizes (issue 9).  10,000 certificates given to
# sign --chain, verify --trust and validate --ca, and the peak memory of
# verify on a large message.  Prints figures; fails on nothing.
#
#   bench/hostile_sizes.sh [-b BINARY] [-m MIB]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$top/build/p11smime
mib=64
while getopts "b:m:" o; do
	case $o in b) bin=$OPTARG ;; m) mib=$OPTARG ;; *) exit 2 ;; esac
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash "$top/softhsm-conf/provision.sh" "$work/tok" >/dev/null
export SOFTHSM2_CONF=$work/tok/softhsm2.conf
export P11SMIME_MODULE=${P11S_SOFTHSM_MODULE:-/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so}
pin=$work/tok/pin ca=$work/tok/ca/ca.pem

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/k.pem" \
	-subj "/CN=bench anchor" -set_serial 0x1000000000000000 -days 30 \
	-addext basicConstraints=critical,CA:TRUE -out "$work/one.pem" 2>/dev/null
python3 - "$work/one.pem" "$work/many.pem" 10000 <<'PY'
import base64, sys
pem = open(sys.argv[1]).read()
der = base64.b64decode("".join(l for l in pem.splitlines() if not l.startswith("-----")))
at = der.index(b"\x02\x08\x10\x00\x00\x00\x00\x00\x00\x00") + 6
with open(sys.argv[2], "w") as f:
    for i in range(int(sys.argv[3])):
        b = base64.b64encode(der[:at] + i.to_bytes(4, "big") + der[at + 4:]).decode()
        f.write("-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n"
                % "\n".join(b[k:k + 64] for k in range(0, len(b), 64)))
PY
cat "$work/many.pem" "$ca" >"$work/trust.pem"
printf 'From: rsa2048@example.org\nSubject: b\n\nhello\n' >"$work/m.eml"
"$bin" --pin-source "file:$pin" sign --signer rsa2048@example.org -i "$work/m.eml" -o "$work/s.eml"

t() { /usr/bin/time -f "%e s, peak %M KiB" "$@" 2>&1 >/dev/null | tail -1; }
echo "sign --chain 10,000:     $(t "$bin" --pin-source "file:$pin" sign --signer rsa2048@example.org \
	--chain "$work/many.pem" -i "$work/m.eml" -o "$work/c.eml")"
echo "verify --trust 10,000:   $(t "$bin" verify --trust "$work/trust.pem" -i "$work/s.eml")"
echo "validate --ca 10,000:    $(t "$bin" validate --ca "$work/trust.pem" \
	"$work/tok/certs/rsa2048.pem")"

{
	printf 'From: rsa2048@example.org\nSubject: big\nContent-Type: text/plain\n\n'
	head -c $((mib * 1024 * 1024 * 3 / 4)) /dev/urandom | base64 -w 76
} >"$work/big.eml"
"$bin" --pin-source "file:$pin" sign --signer rsa2048@example.org -i "$work/big.eml" \
	-o "$work/bigs.eml"
echo "verify ${mib} MiB message: $(t "$bin" verify --trust "$ca" -i "$work/bigs.eml" \
	-o "$work/out.eml")"
