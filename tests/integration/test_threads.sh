#!/usr/bin/env bash
# One context shared by threads (tests/integration/test_threads.c):
#   - 4 threads sign at once through one prepared signer (RSA PKCS#1 v1.5,
#     RSA-PSS on the token, ECDSA); every message verifies with
#     `openssl cms -verify` and carries its own thread's text;
#   - 3 threads decrypt at once (two on one RSA key, one on an EC key), each
#     finding its key through the shared context; every output is the
#     original.
# tools/ci-extra.sh runs this test again in a ThreadSanitizer build.
. "$(dirname "$0")/lib.sh"

: "${P11S_THREADS:?P11S_THREADS (the test_threads program) is not set}"
N=${P11S_THREADS_N:-12}
new_token
export P11S_PIN_SOURCE=file:$PIN_FILE
T=$TEST_TMP

# sign_round NAME SIGNER PSS
sign_round() {
	local name=$1 signer=$2 dir=$T/$1 bad=0 f t i
	mkdir -p "$dir"
	timeout 300 "$P11S_THREADS" sign "$signer" "$3" 4 "$N" "$dir" >"$T/$name.log" 2>&1
	RC=$?
	assert_exit 0 "$name: 4 threads x $N signatures through one signer"
	[ "$RC" = 0 ] || head -20 "$T/$name.log"
	for t in 0 1 2 3; do
		for ((i = 0; i < N; i++)); do
			f=$dir/$t-$i.eml
			if ! openssl cms -verify -in "$f" -CAfile "$CA_PEM" -out "$f.out" 2>"$f.err" ||
				! grep -q "^thread $t message $i" "$f.out"; then
				bad=$((bad + 1))
				[ $bad -le 3 ] && echo "  $f: $(head -c 300 "$f.err")"
			fi
		done
	done
	assert_eq 0 "$bad" "$name: all $((4 * N)) messages verify with openssl cms -verify, each with its own text"
}

sign_round rsa rsa2048@example.org 0
sign_round pss rsa2048@example.org 1
sign_round ecdsa p256@example.org 0
# PSS really is PSS (the shared key kept its per-thread padding).
openssl cms -cmsout -print -in "$T/pss/3-0.eml" 2>/dev/null | grep -q rsassaPss &&
	pass "pss: the signatures are RSASSA-PSS" || fail "pss: not RSASSA-PSS"

# Decryption: two threads on one RSA key, one on an EC key.
for m in a b c; do
	printf 'To: <x@example.org>\nSubject: %s\n\nsecret %s %s\n' "$m" "$m" "$RANDOM" >"$T/plain-$m.txt"
done
openssl cms -encrypt -aes256 -in "$T/plain-a.txt" -out "$T/enc-a.eml" "$CERTS_DIR/rsa2048.pem"
openssl cms -encrypt -aes256 -in "$T/plain-b.txt" -out "$T/enc-b.eml" "$CERTS_DIR/rsa2048.pem"
openssl cms -encrypt -aes256 -in "$T/plain-c.txt" -out "$T/enc-c.eml" "$CERTS_DIR/p256.pem"
mkdir -p "$T/dec"
timeout 300 "$P11S_THREADS" decrypt "$N" "$T/dec" "$T/enc-a.eml" "$T/enc-b.eml" "$T/enc-c.eml" \
	>"$T/dec.log" 2>&1
RC=$?
assert_exit 0 "decrypt: 3 threads x $N decryptions through one context"
[ "$RC" = 0 ] || head -20 "$T/dec.log"
bad=0
for t in 0 1 2; do
	m=$(echo abc | cut -c$((t + 1)))
	want=$(tail -n1 "$T/plain-$m.txt")
	for ((i = 0; i < N; i++)); do
		grep -qx "$want" "$T/dec/dec-$t-$i.eml" 2>/dev/null || bad=$((bad + 1))
	done
done
assert_eq 0 "$bad" "decrypt: every output holds its own message's text"
finish
