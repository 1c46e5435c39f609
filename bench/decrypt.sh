#!/usr/bin/env bash
# Benchmark: p11smime decrypt.
#
#   bench/decrypt.sh [-s SECONDS] [-m MIB] [-c "gcm cbc"] [-B BUILD_DIR]
#
# On a fresh SoftHSM token (softhsm-conf/provision.sh, in a temp dir):
#
# (a) per-message rate, in one process (bench/decrypt_bench.c, compiled here
#     against BUILD_DIR's static libraries): the token's raw rate for the
#     work one message needs (C_DecryptInit + C_Decrypt with CKM_RSA_PKCS for
#     RSA-2048; C_DeriveKey CKM_ECDH1_DERIVE + reading the derived secret +
#     C_DestroyObject for P-256, as libp11 does) against p11smime decrypting
#     a 4 KiB AES-256-GCM message in-process, with the key opened once
#     (p11s_decrypt_with_pkey) and with the recipients matched against the
#     token on every message (p11s_decrypt, as the command does).  Each loop
#     runs SECONDS (default 3).
# (b) a MIB-MiB message (default 1024) encrypted by openssl cms -encrypt
#     -stream for rsa2048 (PKCS#1 v1.5), with each content cipher of -c
#     (default "gcm cbc"): wall time and peak RSS (GNU time) of
#       p11smime decrypt -i big.p7m -o out
#       openssl cms -decrypt -engine pkcs11 -keyform engine -inkey 'pkcs11:...'
#     and a check that both outputs are the same bytes.
# Needs 4 x MIB of free space in $TMPDIR.  Figures go to docs/performance.md by hand.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
secs=3
mib=1024
ciphers="gcm cbc"
build=${P11S_BUILDDIR:-$src/build}
while getopts "s:m:c:B:" o; do
	case $o in
	s) secs=$OPTARG ;;
	m) mib=$OPTARG ;;
	c) ciphers=$OPTARG ;;
	B) build=$OPTARG ;;
	*) echo "usage: $0 [-s SECONDS] [-m MIB] [-c 'gcm cbc'] [-B BUILD_DIR]" >&2; exit 2 ;;
	esac
done
bin=$build/p11smime
[ -x "$bin" ] || { echo "decrypt.sh: no p11smime binary in $build (build first, or -B DIR)" >&2; exit 2; }
for l in libp11smime.a libp11s_pkcs11.a libp11s_common.a; do
	[ -f "$build/$l" ] || { echo "decrypt.sh: $build/$l missing" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "decrypt.sh: GNU time (/usr/bin/time) is required" >&2; exit 2; }
module=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so

work=$(mktemp -d "${TMPDIR:-/tmp}/p11s-bench-decrypt.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "== setup: fresh token, bench program"
bash "$src/softhsm-conf/provision.sh" "$work/token" >/dev/null
. "$work/token/env"
pin=$(head -n1 "$P11S_PIN_FILE")
# shellcheck disable=SC2046
cc -O2 -Wall -I"$src/include" $(pkg-config --cflags p11-kit-1) -o "$work/decrypt_bench" \
	"$here/decrypt_bench.c" "$build/libp11smime.a" "$build/libp11s_pkcs11.a" \
	"$build/libp11s_common.a" $(pkg-config --libs openssl libp11 p11-kit-1 jansson) -ldl

echo
echo "== (a) per-message rate, ${secs} s per loop (ops/s)"
for k in "rsa2048 01 RSA-2048 PKCS#1 v1.5, AES-256-GCM" "p256 03 P-256 ECDH X9.63-SHA256, AES-256-GCM"; do
	read -r name id what <<<"$k"
	"$work/decrypt_bench" "$module" "$P11S_TOKEN_LABEL" "$P11S_PIN_FILE" \
		"$work/token/certs/$name.pem" "$id" "$secs" >"$work/rate.$name"
	awk -v what="$what" '
		{ r[$1] = $2 }
		END {
			raw = r["raw-C_Decrypt"] ? r["raw-C_Decrypt"] : r["raw-C_DeriveKey"]
			rawname = r["raw-C_Decrypt"] ? "C_Decrypt" : "C_DeriveKey+read+destroy"
			printf "%s\n", what
			printf "  %-40s %9.1f\n", "raw " rawname " (token only)", raw
			printf "  %-40s %9.1f   %5.1f%% of raw\n", "p11smime, key opened once", r["p11smime-open-key"], 100 * r["p11smime-open-key"] / raw
			printf "  %-40s %9.1f   %5.1f%% of raw\n", "p11smime, recipients matched each time", r["p11smime-match-each"], 100 * r["p11smime-match-each"] / raw
		}' "$work/rate.$name"
done

echo
echo "== (b) ${mib} MiB message, RSA-2048 PKCS#1 v1.5"
printf 'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n' >"$work/pt"
head -c $((mib * 1024 * 1024)) /dev/urandom >>"$work/pt"
key_uri="pkcs11:token=$P11S_TOKEN_LABEL;id=%01;type=private;pin-value=$pin"
for c in $ciphers; do
	case $c in gcm) cipher=aes-256-gcm ;; cbc) cipher=aes-256-cbc ;; *) echo "unknown cipher $c" >&2; exit 2 ;; esac
	openssl cms -encrypt -binary -stream -in "$work/pt" -"$cipher" -recip "$work/token/certs/rsa2048.pem" \
		-out "$work/big.p7m"
	size=$(stat -c %s "$work/big.p7m")
	/usr/bin/time -f "%e %M" -o "$work/t.p11smime" "$bin" --module "$module" --pin-source "file:$P11S_PIN_FILE" \
		decrypt --entity --keep-line-ends -i "$work/big.p7m" -o "$work/out.p11smime"
	PKCS11_MODULE_PATH=$module /usr/bin/time -f "%e %M" -o "$work/t.openssl" openssl cms -decrypt \
		-engine pkcs11 -keyform engine -inkey "$key_uri" -recip "$work/token/certs/rsa2048.pem" \
		-in "$work/big.p7m" -out "$work/out.openssl" 2>"$work/openssl.err" ||
		{ cat "$work/openssl.err"; exit 1; }
	if cmp -s "$work/out.p11smime" "$work/out.openssl" && cmp -s "$work/out.p11smime" "$work/pt"; then same=yes; else same=NO; fi
	read -r pt_s pt_kb <"$work/t.p11smime"
	read -r ot_s ot_kb <"$work/$(tail -n1 "$work/t.openssl" >"$work/t.o2"; echo t.o2)"
	awk -v c="$cipher" -v sz="$size" -v mib="$mib" -v ps="$pt_s" -v pk="$pt_kb" -v os="$ot_s" -v ok="$ot_kb" -v same="$same" 'BEGIN {
		printf "%s, S/MIME base64 input %.0f MiB, plaintext %d MiB; outputs identical: %s\n", c, sz / 1048576, mib, same
		printf "  %-28s %8.2f s %8.1f MiB/s %10.1f MiB peak RSS\n", "p11smime decrypt", ps, mib / ps, pk / 1024
		printf "  %-28s %8.2f s %8.1f MiB/s %10.1f MiB peak RSS\n", "openssl cms -decrypt", os, mib / os, ok / 1024
		printf "  time ratio p11smime/openssl %.2f, RSS ratio %.3f\n", ps / os, pk / ok
	}'
	rm -f "$work/big.p7m" "$work/out.p11smime" "$work/out.openssl"
done
