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
# 1 MiB header limit), and 10,000 for comparison.  Before the fix each run
# below took over a minute (quadratic).  No wall-time bound (a loaded
# machine makes those flaky): the CPU time for 100,000 must stay within
# linear reach of that for 10,000, and every run ends before P11S_TIMEOUT.
for n in 10000 100000; do
	python3 - "$T/many$n.hdr" "$n" <<'EOF'
import sys
with open(sys.argv[1], "w") as f:
    f.write("From: " + ", ".join("%x@x.y" % i for i in range(int(sys.argv[2]))) + "\n")
EOF
	{ cat "$T/many$n.hdr"; printf '\nx\n'; } >"$T/many$n-unsigned.eml"
	{ cat "$T/many$n.hdr"; printf 'To: bob@example.org\n'; cat "$T/part.eml"; } >"$T/many$n-signed.eml"
	{ sed 's/^From:/To:/' "$T/many$n.hdr"; printf 'From: alice@example.org\n\nx\n'; } >"$T/many$n-to.eml"
done

# run_big OUT ERR ARGS...: like run_p11smime, for outputs too large for the
# environment (run_p11smime exports them); sets RC and CPU (user + system,
# in milliseconds).
run_big() {
	local out=$1 err=$2
	shift 2
	/usr/bin/time -f '%U %S' -o "$T/time" timeout -k 5 "$P11S_TIMEOUT" "$P11SMIME" "$@" >"$out" 2>"$err"
	RC=$?
	CPU=$(tail -n 1 "$T/time" | awk '{ printf "%d", ($1 + $2) * 1000 }')
}
# linear NAME CPU10K CPU100K: 100,000 addresses cost at most 25 times what
# 10,000 cost (linear is 10 times; the quadratic bug was 100), plus 300 ms
# for start-up noise.
linear() {
	[ "$3" -le $((25 * $2 + 300)) ] &&
		pass "$1: linear (${2} ms of CPU for 10,000 addresses, ${3} ms for 100,000)" ||
		fail "$1: ${3} ms of CPU for 100,000 addresses against ${2} ms for 10,000"
}

for n in 10000 100000; do
	run_big "$T/v1.out" "$T/v1.err" verify --trust "$CA_PEM" -i "$T/many$n-unsigned.eml"
	assert_exit 4 "verify, unsigned mail with $n From addresses: refused"
	assert_contains "$T/v1.err" "the message is not signed"
	eval "cpu_v1_$n=\$CPU"

	run_big "$T/v2.out" "$T/v2.err" verify --trust "$CA_PEM" -i "$T/many$n-signed.eml"
	assert_exit 1 "verify, signed mail with $n From addresses: sender not confirmed"
	assert_contains "$T/v2.out" "NOT SIGNED BY ITS SENDER"
	eval "cpu_v2_$n=\$CPU"

	run_big "$T/e.out" "$T/e.err" encrypt --recipient "$T/alice.pem" -i "$T/many$n-to.eml" -o "$T/enc.eml"
	assert_exit 1 "encrypt, $n To addresses without certificates: refused"
	assert_contains "$T/e.err" "no recipient certificate for $n of"
	assert_file_absent "$T/enc.eml"
	eval "cpu_e_$n=\$CPU"
done
linear "verify, unsigned" "$cpu_v1_10000" "$cpu_v1_100000"
linear "verify, signed" "$cpu_v2_10000" "$cpu_v2_100000"
linear "encrypt" "$cpu_e_10000" "$cpu_e_100000"

finish
