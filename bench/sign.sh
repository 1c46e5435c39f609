#!/usr/bin/env bash
# Benchmark: p11smime sign.
#
#   bench/sign.sh [-n RUNS] [-m MIB] [-b P11SMIME_BINARY] [-k]
#
# Provisions a fresh SoftHSM token (softhsm-conf/provision.sh) in a temp dir
# and measures, with the token's RSA-2048 key (id 01):
#
# (a) one process per message, a 4 KiB mail, RUNS (default 15) paired runs,
#     the order alternating within each pair so drift hits both alike:
#       p11smime --module SOFTHSM --pin-source file:PIN sign --signer URI
#       openssl cms -sign -engine pkcs11 -keyform engine -inkey 'pkcs11:...'
#     (both detached multipart/signed, SHA-256, RSA PKCS#1 v1.5, the key on
#     the token); prints each median wall time and the ratio.
# (b) one message of MIB MiB (default 1024): a base64 attachment of random
#     bytes.  Prints wall time, MB/s, peak RSS (/usr/bin/time -v) of
#       p11smime sign
#       openssl cms -sign -stream -engine pkcs11 ... (for reference)
#     and the SHA-256 rate of `openssl speed -evp sha256` (16 KiB blocks) on
#     this machine.  Both signatures are verified against the original bytes
#     (openssl cms -verify -binary -content, streaming from a file).
#     -k skips (b).
#
# Figures are recorded by hand in docs/performance.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
runs=15
mib=1024
skip_large=0
bin=${P11SMIME:-$src/build/p11smime}
while getopts "n:m:b:k" o; do
	case $o in
	n) runs=$OPTARG ;;
	m) mib=$OPTARG ;;
	b) bin=$OPTARG ;;
	k) skip_large=1 ;;
	*) echo "usage: $0 [-n RUNS] [-m MIB] [-b P11SMIME] [-k]" >&2; exit 2 ;;
	esac
done
[ -x "$bin" ] || { echo "sign.sh: no p11smime binary at $bin (build first, or -b PATH)" >&2; exit 2; }
for t in openssl awk base64; do
	command -v "$t" >/dev/null || { echo "sign.sh: $t is required" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "sign.sh: /usr/bin/time is required (apt-get install time)" >&2; exit 2; }
[ -f /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so ] ||
	{ echo "sign.sh: libp11's engine is required (apt-get install libengine-pkcs11-openssl)" >&2; exit 2; }
module=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so

work=$(mktemp -d "${TMPDIR:-/tmp}/p11s-bench-sign.XXXXXX")
trap 'rm -rf "$work"' EXIT
tok=$work/token
bash "$src/softhsm-conf/provision.sh" "$tok" >/dev/null
. "$tok/env"
pin=$(head -n1 "$P11S_PIN_FILE")
cert=$tok/certs/rsa2048.pem
uri="pkcs11:token=$P11S_TOKEN_LABEL;id=%01;type=cert"
key_uri="pkcs11:token=$P11S_TOKEN_LABEL;id=%01;type=private;pin-value=$pin"
cat >"$work/engine.cnf" <<EOF
openssl_conf = oc
[oc]
engines = es
[es]
pkcs11 = p11
[p11]
engine_id = pkcs11
MODULE_PATH = $module
init = 0
EOF

now_ns() { date +%s%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# ------------------------------------------------ (a) one process per message
{
	printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: benchmark\n'
	printf 'Date: Sat, 28 Nov 2026 09:00:00 +0000\nMessage-ID: <bench@example.org>\n'
	printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n'
	for i in $(seq 1 60); do
		printf 'Line %02d of a four kilobyte benchmark message, plain 7-bit text here.\n' "$i"
	done
} >"$work/mail.long"
# Cut to 4 KiB from a file: head on a pipe would kill the writer (pipefail).
head -c 4095 "$work/mail.long" >"$work/mail.eml"
echo >>"$work/mail.eml"

p11s_sign() {
	"$bin" --module "$module" --pin-source "file:$P11S_PIN_FILE" sign --signer "$uri" \
		-i "$1" -o "$2"
}
ossl_sign() {
	OPENSSL_CONF=$work/engine.cnf openssl cms -sign -engine pkcs11 -keyform engine -inkey "$key_uri" \
		-signer "$cert" -md sha256 -in "$1" -out "$2" 2>/dev/null
}

p11s_sign "$work/mail.eml" "$work/a.p11s"
ossl_sign "$work/mail.eml" "$work/a.ossl"
for f in a.p11s a.ossl; do
	openssl cms -verify -in "$work/$f" -CAfile "$tok/ca/ca.pem" -out /dev/null 2>/dev/null ||
		{ echo "sign.sh: $f does not verify" >&2; exit 1; }
done

: >"$work/t.p11s"
: >"$work/t.ossl"
for i in $(seq 1 "$runs"); do
	for who in p11s ossl; do
		[ $((i % 2)) = 0 ] && who=$([ $who = p11s ] && echo ossl || echo p11s)
		t0=$(now_ns)
		"${who}_sign" "$work/mail.eml" "$work/out.$who"
		t1=$(now_ns)
		echo $(((t1 - t0) / 1000)) >>"$work/t.$who"
	done
done
mp=$(median <"$work/t.p11s")
mo=$(median <"$work/t.ossl")
echo "== (a) one process per 4 KiB message, $runs paired runs, RSA-2048 PKCS#1 v1.5 on SoftHSM"
awk -v p="$mp" -v o="$mo" 'BEGIN {
	printf "p11smime sign                      median %8.1f ms\n", p / 1000
	printf "openssl cms -sign -engine pkcs11   median %8.1f ms\n", o / 1000
	printf "ratio p11smime / openssl           %.2f\n", p / o }'

[ $skip_large = 1 ] && exit 0

# ------------------------------------------------------- (b) a large message
echo "== (b) one message of $mib MiB (base64 attachment)"
hdr='From: rsa2048@example.org
To: bob@example.net
Subject: a large attachment
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="big"

--big
Content-Type: text/plain; charset=us-ascii

The attachment follows.
--big
Content-Type: application/octet-stream; name="big.bin"
Content-Transfer-Encoding: base64
'
raw=$((mib * 1024 * 1024 / 77 * 57))
{
	printf '%s\n' "$hdr"
	head -c "$raw" /dev/urandom | base64 -w 76
	printf -- '--big--\n'
} >"$work/big.eml"
size=$(stat -c %s "$work/big.eml")

# The entity that must be signed, built from the input by the rules of RFC
# 8551 (Content-* fields, blank line, body, CRLF), streaming.
{
	printf 'Content-Type: multipart/mixed; boundary="big"\r\n\r\n'
	sed -n '/^--big$/,$p' "$work/big.eml" | sed 's/$/\r/'
} >"$work/big.entity"

timed() { # NAME CMD...: run under /usr/bin/time -v, print wall s and peak RSS KiB
	local name=$1
	shift
	/usr/bin/time -v "$@" 2>"$work/time.$name" >/dev/null
	awk -F': ' -v n="$name" -v size="$size" '
		/Elapsed \(wall clock\)/ { split($2, t, ":"); s = (length(t) == 3) ? t[1] * 3600 + t[2] * 60 + t[3] : t[1] * 60 + t[2] }
		/Maximum resident set size/ { rss = $2 }
		END { printf "%-34s %7.2f s  %8.1f MB/s  peak RSS %7.1f MiB\n", n, s, size / s / 1e6, rss / 1024 }' \
		"$work/time.$name"
}

timed "p11smime sign" "$bin" --module "$module" --pin-source "file:$P11S_PIN_FILE" sign --signer "$uri" \
	-i "$work/big.eml" -o "$work/big.p11s"
timed "openssl cms -sign -stream" env OPENSSL_CONF="$work/engine.cnf" openssl cms -sign -stream \
	-engine pkcs11 -keyform engine -inkey "$key_uri" -signer "$cert" -md sha256 \
	-in "$work/big.eml" -out "$work/big.ossl"

# Verify p11smime's signature against the original bytes, not its own copy:
# the base64 of its smime.p7s part (read from the end of the file).
tail -n 200 "$work/big.p11s" |
	awk '/^Content-Type: application\/pkcs7-signature/ { s = 1 } s && /^$/ { b = 1; next } b && /^------=_p11s_/ { exit } b' |
	base64 -d >"$work/big.p7s"
if openssl cms -verify -binary -inform DER -in "$work/big.p7s" -content "$work/big.entity" \
	-CAfile "$tok/ca/ca.pem" -out /dev/null 2>/dev/null; then
	echo "p11smime's signature verifies against the original bytes"
else
	echo "sign.sh: p11smime's signature does NOT verify against the original bytes" >&2
	exit 1
fi

openssl speed -evp sha256 -bytes 16384 -seconds 3 2>/dev/null >"$work/speed"
awk -v size="$size" '/^sha256/ { v = $NF; sub(/k$/, "", v); printf "openssl speed -evp sha256 (16 KiB) %8.1f MB/s\n", v * 1000 / 1e6 }' \
	"$work/speed"
echo "message size: $size bytes"
