#!/usr/bin/env bash
# p11smime milter inside a real Postfix (a private instance as root, config
# and queue under the test's temp dir) relaying to smtp-sink, which keeps
# what leaves.  Four SMTP clients at once send mail from addresses with RSA
# and EC certificates on a SoftHSM token and from one without: the signed
# mail verifies with OpenSSL and gpgsm, content and headers intact; the
# other arrives unchanged; --require-signature refuses it; with the mock
# module's token pulled out mail is tempfailed, and signed again once it
# is back; SIGTERM stops the milter cleanly.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"
. "$(dirname "$0")/postfix.sh"

if [ "$(id -u)" != 0 ]; then
	pass "skipped: a private Postfix instance needs root (CI runs as root)"
	finish
fi
command -v postfix >/dev/null && command -v smtp-sink >/dev/null ||
	{ fail "postfix and smtp-sink are not installed (tools/install-deps.sh)"; finish; }

T=$TEST_TMP
chmod 755 "$T" # Postfix's daemons (user postfix) reach their queue below it
SEND=$P11S_SRCDIR/tests/integration/smtp_send.py
MPID=
milter_stop() { # sets MRC
	MRC=
	[ -n "$MPID" ] || return 0
	kill -TERM "$MPID" 2>/dev/null
	for _ in $(seq 600); do kill -0 "$MPID" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$MPID" 2>/dev/null && kill -9 "$MPID"
	wait "$MPID"
	MRC=$?
	MPID=
}
cleanup() { milter_stop; pf_stop; }
trap '_m_rc=$?; cleanup; _interop_cleanup; (exit $_m_rc); _t_on_exit' EXIT

MPORT=$(free_port)
MLOG=$T/milter.log
milter_start() { # ARGS...: start the milter on MPORT; 1 when it does not listen
	: >"$MLOG"
	"$P11SMIME" --pin-source "file:$PIN_FILE" milter --listen "inet:$MPORT@127.0.0.1" "$@" \
		</dev/null >"$MLOG" 2>&1 &
	MPID=$!
	for _ in $(seq 1200); do
		grep -q "listening on" "$MLOG" && return 0
		kill -0 "$MPID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$MLOG"
	return 1
}

new_token
gpgsm_setup "$CA_PEM"
milter_start || fail "the milter starts"
assert_contains "$MLOG" "signs for rsa2048@example.org with"
assert_contains "$MLOG" "signs for p256@example.org with"
assert_contains "$MLOG" "signs for p384@example.org with"
pf_start "$T/pf" "inet:127.0.0.1:$MPORT" || fail "Postfix starts"

# ------------------------------------------------------------ the messages
mkdir "$T/out"
n=0
msg() { # FROM KIND: write a message to $T/out/NN.eml
	n=$((n + 1))
	local f
	f=$T/out/$(printf '%02d' $n).eml
	{
		printf 'From: Sender %s <%s>\n' "$n" "$1"
		printf 'To: Rcpt <rcpt@example.net>\n'
		printf 'Subject: message %s from %s\n' "$n" "$1"
		printf 'Date: Fri, 04 Dec 2026 12:00:%02d +0000\n' $((n % 60))
		printf 'Message-ID: <m%s@p11smime.test>\n' "$n"
		printf 'X-Test-Id: %s\n' "$n"
		printf 'X-Folded: a value\n\tcontinued on a second line\n'
		case "$2" in
		plain)
			printf 'Content-Type: text/plain; charset=us-ascii\n\n'
			printf 'Hello, this is message %s.\n\nBest regards\n' "$n"
			;;
		multi)
			printf 'MIME-Version: 1.0\nContent-Type: multipart/mixed;\n\tboundary="b-%s"\n\n' "$n"
			printf 'Preamble.\n\n--b-%s\nContent-Type: text/plain\n\nPart one of %s.\n' "$n" "$n"
			printf '\n--b-%s\nContent-Type: application/octet-stream\n' "$n"
			printf 'Content-Transfer-Encoding: base64\n\nAAECAwQFBgcICQ==\n\n--b-%s--\n' "$n"
			;;
		bare)
			printf '\nNo MIME fields at all in %s.\n' "$n"
			;;
		esac
	} >"$f"
}
for round in 1 2 3; do
	msg rsa2048@example.org plain
	msg p256@example.org multi
	msg rsa3072@example.org bare
	msg p384@example.org plain
	msg nobody@example.org plain
done
# Already signed by its author: passes unchanged.
RUN_STDIN=$T/out/01.eml run_p11smime --pin-source "file:$PIN_FILE" sign --signer rsa2048@example.org \
	-o "$T/presigned.eml"
assert_exit 0 "a message signed beforehand"
n=$((n + 1))
sed 's/^X-Test-Id: .*/X-Test-Id: '$n'/' "$T/presigned.eml" >"$T/out/$n.eml"
total=$n

python3 "$SEND" "$PF_PORT" 4 "$T/results" "$T"/out/*.eml
ok=$(awk '$2 == 250' "$T/results" | wc -l)
assert_eq "$total" "$ok" "4 concurrent clients: the MTA took all $total messages"
pf_wait_sink "$total" 60 || fail "smtp-sink received $total mails"

# The sink's dump of the message with X-Test-Id N: smtp-sink writes its
# envelope as X-Client-/X-Helo-/X-Mail-/X-Rcpt- lines first and one blank
# line after the data; both are dropped.
captured() {
	local f
	f=$(grep -l "^X-Test-Id: $1\$" "$SINK_DIR"/* | head -n1)
	[ -n "$f" ] || return 1
	sed '/^X-\(Client\|Helo\|Mail\|Rcpt\)-/d; ${/^$/d}' "$f" >"$2"
}
# The outer fields we sent, one line each (folding kept as its own lines).
outer_lines() { awk '/^$/ {exit} {print}' "$1" | grep -v -i -e '^Content-' -e '^MIME-Version:' -e '^[ \t]'; }

checked_signed=0
checked_plain=0
for f in "$T"/out/*.eml; do
	id=$(sed -n 's/^X-Test-Id: //p' "$f")
	from=$(sed -n 's/^From: .*<\(.*\)>/\1/p' "$f")
	got=$T/got-$id.eml
	captured "$id" "$got" || { fail "message $id was not captured"; continue; }
	if [ "$id" = "$total" ]; then
		# Postfix adds Received; everything from our first line on is as sent.
		sed -n '/^From: /,$p' "$got" >"$got.tail"
		cmp -s "$got.tail" "$f" && pass "already signed: passed unchanged" ||
			{ fail "already signed: changed"; diff "$f" "$got.tail" | head; }
		continue
	fi
	case "$from" in
	nobody@*)
		sed -n '/^From: /,$p' "$got" >"$got.tail"
		cmp -s "$got.tail" "$f" && checked_plain=$((checked_plain + 1)) ||
			{ fail "message $id (no signer) arrived changed"; diff "$f" "$got.tail" | head; }
		;;
	*)
		# Content intact: the signed entity is exactly the Content-* fields and body sent.
		if ! openssl cms -verify -in "$got" -CAfile "$CA_PEM" -out "$T/content-$id" \
			>"$T/ossl-$id.log" 2>&1; then
			fail "message $id from $from: openssl cms -verify"
			cat "$T/ossl-$id.log"
			continue
		fi
		canonical_entity "$f" "$T/want-$id"
		cmp -s "$T/want-$id" "$T/content-$id" ||
			{ fail "message $id: the signed content differs from what was sent"; continue; }
		smime_signature "$got" "$T/sig-$id.der" &&
			gpgsm_verify "$T/sig-$id.der" "$T/content-$id" ||
			{ fail "message $id from $from: gpgsm --verify"; tail -n 5 "$T/gpgsm.log"; continue; }
		# The signer is the From address's own certificate.
		openssl cms -verify -in "$got" -noverify -signer "$T/signer-$id.pem" -out /dev/null \
			>/dev/null 2>&1
		openssl x509 -in "$T/signer-$id.pem" -noout -ext subjectAltName 2>/dev/null |
			grep -q "email:$from" ||
			{ fail "message $id: not signed with $from's certificate"; continue; }
		outer_lines "$f" | while IFS= read -r line; do
			grep -qxF -- "$line" "$got" || echo "missing: $line"
		done >"$T/missing-$id"
		[ -s "$T/missing-$id" ] && { fail "message $id: headers lost"; cat "$T/missing-$id"; continue; }
		grep -q $'^\tcontinued on a second line$' "$got" ||
			{ fail "message $id: a folded header lost its fold"; continue; }
		[ "$(grep -ci '^MIME-Version:' "$got")" = 1 ] ||
			{ fail "message $id: MIME-Version not exactly once"; continue; }
		checked_signed=$((checked_signed + 1))
		;;
	esac
done
assert_eq 12 "$checked_signed" \
	"12 mails from RSA and EC addresses: openssl and gpgsm verify them, content and headers intact"
assert_eq 3 "$checked_plain" "3 mails from an address without a certificate arrive unchanged"
assert_eq "$((total - 1))" "$(grep -c ': from=<.*> \(signed by\|passed unsigned\)' "$MLOG")" \
	"one log line a message"
assert_matches "$MLOG" ': from=<p256@example.org> signed by .*CN=p11smime test p256'
assert_matches "$MLOG" ': from=<nobody@example.org> passed unsigned: no signer for nobody@example.org'
assert_matches "$MLOG" 'passed: already signed or encrypted \(multipart/signed\)'
assert_matches "$MLOG" '^p11smime milter: [0-9A-F]+: from=' # Postfix's queue id

milter_stop
assert_eq 0 "$MRC" "SIGTERM: the milter stops cleanly (exit 0)"
assert_contains "$MLOG" "stopped"

# ----------------------------------------------------- --require-signature
milter_start --require-signature || fail "the milter starts with --require-signature"
python3 "$SEND" "$PF_PORT" 2 "$T/results2" "$T/out/05.eml" "$T/out/01.eml"
assert_matches "$T/results2" "/05.eml 550 5.7.1 not signed: no signer for nobody@example.org"
assert_matches "$T/results2" "/01.eml 250 "
assert_matches "$MLOG" "from=<nobody@example.org> refused: no signer"
milter_stop

# ------------------------------------------------------------ signer map
cat >"$T/map" <<EOF
# who signs what
@example.net   pkcs11:token=$TOKEN_LABEL;object=p256;type=cert
nobody@example.org pkcs11:token=$TOKEN_LABEL;id=%01
EOF
milter_start --signer-map "$T/map" || fail "the milter starts with a signer map"
assert_matches "$MLOG" "signs for @example.net with .*test p256 .*signer map line 2"
sed 's/^From: .*/From: Someone <someone@example.net>/; s/^X-Test-Id: .*/X-Test-Id: 90/' \
	"$T/out/01.eml" >"$T/map1.eml"
sed 's/^X-Test-Id: .*/X-Test-Id: 91/' "$T/out/05.eml" >"$T/map2.eml"
python3 "$SEND" "$PF_PORT" 2 "$T/results3" "$T/map1.eml" "$T/map2.eml"
assert_eq 2 "$(awk '$2 == 250' "$T/results3" | wc -l)" "signer map: both taken"
assert_matches "$MLOG" "from=<someone@example.net> signed by .*test p256"
assert_matches "$MLOG" "from=<nobody@example.org> signed by .*test rsa2048"
pf_wait_sink $((total + 3)) 30
captured 90 "$T/got-90.eml" && openssl cms -verify -in "$T/got-90.eml" -CAfile "$CA_PEM" \
	-out /dev/null >/dev/null 2>&1 && pass "signer map: @domain mail verifies" ||
	fail "signer map: @domain mail"
milter_stop

printf 'nobody@example.org pkcs11:id=%%01\n@bad..domain pkcs11:id=%%02\n' >"$T/badmap"
run_p11smime --pin-source "file:$PIN_FILE" milter --listen "inet:$MPORT@127.0.0.1" \
	--signer-map "$T/badmap"
assert_exit 2 "a bad signer map: usage error"
assert_contains "$ERR" "$T/badmap:2: '@bad..domain' is not @ and a domain"
printf 'a@example.org %s\n' "pkcs11:$(head -c 3000 /dev/zero | tr '\0' x)" >"$T/longmap"
run_p11smime --pin-source "file:$PIN_FILE" milter --listen "inet:$MPORT@127.0.0.1" \
	--signer-map "$T/longmap"
assert_exit 2 "a signer map line too long: usage error"
assert_contains "$ERR" "$T/longmap:1: line longer than"
run_p11smime milter --listen "tcp:25"
assert_exit 2 "--listen must be inet: or unix:"

# ------------------------------------------- the token pulled out and back
mock_token
export P11S_MOCK_REMOVED_FILE=$T/pulled
milter_start || fail "the milter starts on the mock token"
assert_contains "$MLOG" "signs for mock@example.org"
mockmsg() { # ID
	sed "s/^From: .*/From: Mock <mock@example.org>/; s/^X-Test-Id: .*/X-Test-Id: $1/" \
		"$T/out/01.eml" >"$T/mock$1.eml"
}
mockmsg 100
mockmsg 101
mockmsg 102
before=$(find "$SINK_DIR" -type f | wc -l)
python3 "$SEND" "$PF_PORT" 1 "$T/r100" "$T/mock100.eml"
assert_matches "$T/r100" " 250 "
touch "$T/pulled"
python3 "$SEND" "$PF_PORT" 1 "$T/r101" "$T/mock101.eml"
assert_matches "$T/r101" "mock101.eml 451 4.7.0 "
assert_matches "$MLOG" "from=<mock@example.org> (tempfail|signing failed)"
python3 "$SEND" "$PF_PORT" 1 "$T/r101b" "$T/mock101.eml"
assert_matches "$T/r101b" "mock101.eml 451 4.7.0 "
rm -f "$T/pulled"
sleep 2.5
python3 "$SEND" "$PF_PORT" 1 "$T/r102" "$T/mock102.eml"
assert_matches "$T/r102" "mock102.eml 250 "
assert_contains "$MLOG" "the token is usable again"
pf_wait_sink $((before + 2)) 30
[ "$(grep -l '^X-Test-Id: 101$' "$SINK_DIR"/* | wc -l)" = 0 ] &&
	pass "the tempfailed mail was not sent" || fail "mail left while the token was out"
captured 102 "$T/got-102.eml" && openssl cms -verify -in "$T/got-102.eml" -CAfile "$CA_PEM" \
	-out /dev/null >/dev/null 2>&1 && pass "signed again once the token is back" ||
	fail "after the token came back"
milter_stop
assert_eq 0 "$MRC" "SIGTERM after a recovery: exit 0"

# A wrong PIN at start: nothing listens, exit 3.
echo 000000 >"$T/badpin"
run_p11smime --pin-source "file:$T/badpin" milter --listen "inet:$MPORT@127.0.0.1"
assert_exit 3 "a wrong PIN at start: exit 3"
finish
