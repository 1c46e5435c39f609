#!/usr/bin/env bash
# Address headers an attacker writes: a stray ')' or ']' once made verify
# and encrypt spin forever, and 100,000 addresses took over a minute.  Each
# run here must end, quickly, with a clear non-zero exit.
. "$(dirname "$0")/lib.sh"

new_token
T=$TEST_TMP
export P11S_TIMEOUT=20

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/alice.key" 2>/dev/null
SAN_EMAIL=alice@example.org ca_issue "key:$T/alice.key" "$T/alice.pem" smime-ec --cn Alice --days 60
[ -s "$T/alice.pem" ] || fail "setup: alice.pem was not made"
printf 'Content-Type: text/plain\n\nhello\n' >"$T/entity.txt"
openssl cms -sign -signer "$T/alice.pem" -inkey "$T/alice.key" -in "$T/entity.txt" \
	-out "$T/part.eml" || fail "setup: openssl cms -sign"

for c in ')' ']'; do
	# The issue's reproducer, as written: an unsigned message.
	printf 'From: a%sb@example.org\n\nx\n' "$c" >"$T/unsigned.eml"
	RUN_STDIN=$T/unsigned.eml run_p11smime verify --trust "$CA_PEM"
	assert_exit 4 "verify, unsigned mail, From a${c}b: ends (exit 4, not a hang)"
	assert_contains "$ERR" "the message is not signed"

	# A good signature, a From nobody can read: the sender is not confirmed.
	{ printf 'From: a%sb@example.org\nTo: bob@example.org\n' "$c"; cat "$T/part.eml"; } \
		>"$T/signed.eml"
	RUN_STDIN=$T/signed.eml run_p11smime verify --trust "$CA_PEM"
	assert_exit 1 "verify, signed mail, From a${c}b: ends (exit 1, sender not confirmed)"
	assert_contains "$OUT" "From header cannot be read"
	assert_contains "$OUT" "closes no"

	printf 'From: alice@example.org\nTo: a%sb@example.org\nSubject: x\n\nx\n' "$c" >"$T/plain.eml"
	run_p11smime encrypt --recipient "$T/alice.pem" -i "$T/plain.eml" -o "$T/enc.eml"
	assert_exit 4 "encrypt, To a${c}b: ends (exit 4, not a hang)"
	assert_contains "$ERR" "malformed address list"
	assert_file_absent "$T/enc.eml"
done

# 100,000 addresses in one From (about 1 MB with short names, under the
# 1 MiB header limit).
python3 - "$T/many.hdr" <<'EOF'
import sys
with open(sys.argv[1], "w") as f:
    f.write("From: " + ", ".join("%x@x.y" % i for i in range(100000)) + "\n")
EOF
{ cat "$T/many.hdr"; printf '\nx\n'; } >"$T/many-unsigned.eml"
{ cat "$T/many.hdr"; printf 'To: bob@example.org\n'; cat "$T/part.eml"; } >"$T/many-signed.eml"
{ sed 's/^From:/To:/' "$T/many.hdr"; printf 'From: alice@example.org\n\nx\n'; } >"$T/many-to.eml"

# run_big OUT ERR ARGS...: like run_p11smime, for outputs too large for the
# environment (run_p11smime exports them); sets RC and MS (wall time).
run_big() {
	local out=$1 err=$2 t0
	shift 2
	t0=$(date +%s%N)
	timeout -k 5 "$P11S_TIMEOUT" "$P11SMIME" "$@" >"$out" 2>"$err"
	RC=$?
	MS=$((($(date +%s%N) - t0) / 1000000))
}
# Generous bounds: sanitizers and a shared 2-core machine.  Before the fix
# each run below took over a minute.
run_big "$T/v1.out" "$T/v1.err" verify --trust "$CA_PEM" -i "$T/many-unsigned.eml"
assert_exit 4 "verify, unsigned mail with 100,000 From addresses: refused"
assert_contains "$T/v1.err" "the message is not signed"
[ "$MS" -lt 3000 ] && pass "... in ${MS} ms (not signed: the From is never parsed)" ||
	fail "unsigned mail with 100,000 From addresses took ${MS} ms"

run_big "$T/v2.out" "$T/v2.err" verify --trust "$CA_PEM" -i "$T/many-signed.eml"
assert_exit 1 "verify, signed mail with 100,000 From addresses: sender not confirmed"
assert_contains "$T/v2.out" "NOT SIGNED BY ITS SENDER"
[ "$MS" -lt 5000 ] && pass "... in ${MS} ms" ||
	fail "signed mail with 100,000 From addresses took ${MS} ms"

run_big "$T/e.out" "$T/e.err" encrypt --recipient "$T/alice.pem" -i "$T/many-to.eml" -o "$T/enc.eml"
assert_exit 1 "encrypt, 100,000 To addresses without certificates: refused"
assert_contains "$T/e.err" "no recipient certificate for 100000 of"
assert_file_absent "$T/enc.eml"
[ "$MS" -lt 5000 ] && pass "... in ${MS} ms" ||
	fail "encrypt with 100,000 To addresses took ${MS} ms"

finish
