#!/usr/bin/env bash
# p11smime agent: one login, then sign and decrypt through it behave as
# without it (same bytes apart from signingTime and the boundary, same
# reports, same messages and exit codes); several clients at once; another
# uid refused; a killed agent leaves its client with exit 3 and no output;
# a pulled token (mock) gives exit 3 and the agent logs in again when it
# is back; SIGTERM removes the socket.
. "$(dirname "$0")/lib.sh"

new_token
PF="file:$PIN_FILE"
cd "$TEST_TMP" || exit 1
export TMPDIR=$TEST_TMP
AGENTS=()
cleanup_agents() {
	for p in "${AGENTS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
}
# The script's own status must reach lib.sh's handler, not the last kill's.
trap '_rc=$?; cleanup_agents; (exit $_rc); _t_on_exit' EXIT

# start_agent ARGS...: run p11smime ARGS (with "agent"), eval its output; its pid is remembered.
start_agent() {
	local env
	env=$("$P11SMIME" "$@") || return 1
	eval "$env"
	AGENTS+=("$P11SMIME_AGENT_PID")
}

printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: through the agent\nDate: Sat, 28 Nov 2026 09:00:00 +0000\n\nHello Bob,\n\nall is well.\n-- \nAlice\n' >m.eml

# ------------------------------------------------------------ start
start_agent --pin-source "$PF" agent --signer rsa2048@example.org 2>start.err
[ -S "${P11SMIME_AGENT_SOCK:-}" ] && pass "agent started, socket $P11SMIME_AGENT_SOCK" ||
	{ fail "agent did not start"; cat start.err; finish; }
assert_eq 700 "$(stat -c %a "$(dirname "$P11SMIME_AGENT_SOCK")")" "the socket's directory is 0700"
assert_eq "$(id -u)" "$(stat -c %u "$(dirname "$P11SMIME_AGENT_SOCK")")" "and ours"
kill -0 "$P11SMIME_AGENT_PID" && pass "P11SMIME_AGENT_PID is running" || fail "no agent process"
out=$("$P11SMIME" --pin-source "$PF" agent -c --signer rsa2048@example.org)
case "$out" in "setenv P11SMIME_AGENT_SOCK "*";"*"setenv P11SMIME_AGENT_PID "*) pass "-c: csh syntax" ;; *) fail "-c: $out" ;; esac
kill -TERM "$(sed -n 's/^setenv P11SMIME_AGENT_PID \([0-9]*\);$/\1/p' <<<"$out")"

# Normalise a signed message: the boundary and the signature are per run.
norm() {
	local b
	b=$(sed -n 's/.*boundary="\([^"]*\)".*/\1/p' "$1" | head -1)
	[ -n "$b" ] || b=NONE
	awk -v b="$b" '{ gsub(b, "BOUNDARY") } /^Content-Disposition: attachment; filename="smime.p7s"/ { print; exit } { print }' "$1"
}

# ---------------------------------------- sign: RSA, PSS, EC; same as alone
for combo in "rsa2048@example.org -" "rsa2048@example.org --pss" "p256@example.org -" "p384@example.org -"; do
	set -- $combo
	signer=$1 extra=()
	[ "$2" != - ] && extra=("$2")
	tag="$signer ${extra[*]}"
	run_p11smime --json sign --signer "$signer" "${extra[@]}" -i m.eml -o a.eml
	assert_exit 0 "agent: sign $tag"
	cp "$OUT" a.json
	run_p11smime --pin-source "$PF" --json sign --no-agent --signer "$signer" "${extra[@]}" -i m.eml -o b.eml
	assert_exit 0 "alone: sign $tag"
	cmp -s a.json "$OUT" && pass "$tag: the same report" || fail "$tag: reports differ"
	openssl cms -verify -CAfile "$CA_PEM" -in a.eml -out a.txt >/dev/null 2>&1 &&
		pass "$tag: OpenSSL verifies the agent's signature" || fail "$tag: does not verify"
	cmp -s <(norm a.eml) <(norm b.eml) && pass "$tag: the same message apart from boundary and signature" ||
		{ fail "$tag: messages differ"; diff <(norm a.eml) <(norm b.eml) | head; }
done

run_p11smime sign --signer rsa2048@example.org --detached-signature --outform pem -i m.eml -o a.pem
assert_exit 0 "agent: --detached-signature --outform pem"
assert_contains a.pem "-----BEGIN PKCS7-----"
run_p11smime sign --signer rsa2048@example.org -i m.eml
assert_exit 0 "agent: to standard output"
assert_contains "$OUT" "application/pkcs7-signature"

# -v says the same
run_p11smime -v sign --signer rsa2048@example.org -i m.eml -o a.eml
cp "$ERR" a.err
run_p11smime -v --pin-source "$PF" sign --no-agent --signer rsa2048@example.org -i m.eml -o b.eml
cmp -s a.err "$ERR" && pass "-v: the same lines" || { fail "-v differs"; diff a.err "$ERR"; }

# Errors: the same message and exit code, nothing written.
printf 'From: rsa2048@example.org\nTo: a@example.org\n\0X-Bad: 1\nSubject: lost\n\nbody\n' >bad.eml
for args in "--signer nobody@example.org -i m.eml" "--signer rsa2048@example.org -i bad.eml" \
	"--signer p256@example.org --pss -i m.eml" "--signer rsa2048@example.org -i missing.eml"; do
	# shellcheck disable=SC2086
	run_p11smime sign $args -o err-a.eml
	rca=$RC
	cp "$ERR" e.a
	# shellcheck disable=SC2086
	run_p11smime --pin-source "$PF" sign --no-agent $args -o err-b.eml
	assert_eq "$RC" "$rca" "sign $args: the same exit code ($RC)"
	cmp -s e.a "$ERR" && pass "sign $args: the same message" || { fail "sign $args: messages differ"; diff e.a "$ERR"; }
	assert_file_absent err-a.eml
done

# --module naming another module is a usage error; the agent's own is fine.
run_p11smime --module "$P11S_MOCK_MODULE" sign --signer rsa2048@example.org -i m.eml -o x.eml
assert_exit 2 "--module of another module than the agent's"
assert_contains "$ERR" "is not the agent's module"
assert_file_absent x.eml
run_p11smime --module "$SOFTHSM_MODULE" sign --signer rsa2048@example.org -i m.eml -o x.eml
assert_exit 0 "--module naming the agent's module"

# ----------------------------------------------------------- decrypt
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\nSecret %s\r\n' "$(head -c 200000 /dev/zero | tr '\0' 'y')" >pt.eml
openssl cms -encrypt -binary -in pt.eml -aes-256-gcm -recip "$CERTS_DIR/p256.pem" -out ec.p7m 2>/dev/null
openssl cms -encrypt -binary -in pt.eml -aes-128-cbc -recip "$CERTS_DIR/rsa2048.pem" -out rsa.p7m 2>/dev/null
openssl cms -encrypt -binary -in pt.eml -aes-256-cbc -recip "$CERTS_DIR/rsa3072.pem" -keyopt rsa_padding_mode:oaep -out oaep.p7m 2>/dev/null
for f in ec rsa oaep; do
	run_p11smime --json decrypt -i $f.p7m -o $f.a
	assert_exit 0 "agent: decrypt $f"
	cp "$OUT" a.json
	run_p11smime --pin-source "$PF" --json decrypt --no-agent -i $f.p7m -o $f.b
	cmp -s $f.a $f.b && pass "decrypt $f: the same bytes" || fail "decrypt $f: output differs"
	# The reports differ only in the time they judged the certificate at.
	jq -S 'del(.at, .recipient.at)' a.json | sed 's/judged at [^)]*/judged at T/' >a.s
	jq -S 'del(.at, .recipient.at)' "$OUT" | sed 's/judged at [^)]*/judged at T/' >b.s
	cmp -s a.s b.s &&
		pass "decrypt $f: the same report" || { fail "decrypt $f: reports differ"; diff a.s b.s; }
	assert_eq 600 "$(stat -c %a $f.a)" "decrypt $f: a new file is 0600"
done
# Past the agent's 1 MiB in memory, message and output go to its spool files.
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n' >big.eml
yes "$(head -c 76 /dev/zero | tr '\0' 'z')" | head -n 40000 | sed 's/$/\r/' >>big.eml
openssl cms -encrypt -binary -in big.eml -aes-256-gcm -recip "$CERTS_DIR/p256.pem" -out big.p7m 2>/dev/null
run_p11smime decrypt -i big.p7m -o big.a
assert_exit 0 "agent: decrypt of 3 MB"
run_p11smime --pin-source "$PF" decrypt --no-agent -i big.p7m -o big.b
cmp -s big.a big.b && pass "3 MB: the same bytes as without the agent" || fail "3 MB: output differs"
run_p11smime sign --signer rsa2048@example.org -i big.eml -o big.s
assert_exit 0 "agent: sign of 3 MB"
openssl cms -verify -CAfile "$CA_PEM" -in big.s -out big.v 2>/dev/null &&
	pass "3 MB: the agent's signature verifies" || fail "3 MB: the agent's signature does not verify"
[ "$(tr -d '\r' <big.v | md5sum)" = "$(tr -d '\r' <big.eml | md5sum)" ] &&
	pass "3 MB: the signed content is the message" || fail "3 MB: signed content differs"
run_p11smime --json decrypt -i ec.p7m
assert_exit 0 "agent: decrypt --json without -o"
assert_json "$OUT" '.content_type == "authEnveloped-data"' "the report alone on standard output"
assert_not_contains "$OUT" "Secret"
head -c 300 rsa.p7m >trunc.p7m
run_p11smime decrypt -i trunc.p7m -o t.a
rca=$RC
cp "$ERR" e.a
run_p11smime --pin-source "$PF" decrypt --no-agent -i trunc.p7m -o t.b
assert_eq "$RC" "$rca" "truncated: the same exit code ($RC)"
cmp -s e.a "$ERR" && pass "truncated: the same message" || { fail "truncated: messages differ"; diff e.a "$ERR"; }
assert_file_absent t.a

# ------------------------------------------------ several clients at once
pids=()
for c in 1 2 3 4; do
	(
		for i in 1 2 3 4 5; do
			"$P11SMIME" sign --signer rsa2048@example.org -i m.eml -o "c$c-$i.eml" || exit 1
		done
	) &
	pids+=($!)
done
( for i in 1 2 3; do "$P11SMIME" decrypt -i ec.p7m -o "d$i.out" || exit 1; done ) &
pids+=($!)
bad=0
for p in "${pids[@]}"; do wait "$p" || bad=$((bad + 1)); done
assert_eq 0 "$bad" "4 signing clients and a decrypting one at once: all exit 0"
bad=0
for c in 1 2 3 4; do
	for i in 1 2 3 4 5; do
		openssl cms -verify -CAfile "$CA_PEM" -in "c$c-$i.eml" -out /dev/null >/dev/null 2>&1 || bad=$((bad + 1))
	done
done
assert_eq 0 "$bad" "all 20 signatures verify with OpenSSL"
cmp -s d3.out ec.a && pass "the concurrent decryptions are right" || fail "concurrent decrypt differs"

# A slow client (half a message, then nothing) does not block another.
mkfifo slow.fifo
"$P11SMIME" sign --signer rsa2048@example.org -i slow.fifo -o slow.eml 2>slow.err &
slowpid=$!
exec 7>slow.fifo
printf 'From: rsa2048@example.org\nSubject: slow\n' >&7
run_p11smime sign --signer rsa2048@example.org -i m.eml -o fast.eml
assert_exit 0 "a client signs while another is half-way"
printf '\nbody\n' >&7
exec 7>&-
wait $slowpid
RC=$?
assert_exit 0 "the slow client finishes too"

# ------------------------------------------------------ another uid
# An agent of uid 65534 (nobody): our uid (root) can pass its directory but
# the agent checks SO_PEERCRED and refuses us.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	mkdir -p nob && cp -a "$TOKEN_DIR/." nob/ && chown -R 65534:65534 nob
	sed -i "s|^directories.tokendir *=.*|directories.tokendir = $TEST_TMP/nob/tokens|" nob/softhsm2.conf
	chmod 755 "$TEST_TMP"
	env=$(HOME=$TEST_TMP/nob SOFTHSM2_CONF=$TEST_TMP/nob/softhsm2.conf TMPDIR=$TEST_TMP/nob setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$P11SMIME" --pin-source "file:$TEST_TMP/nob/pin" agent 2>nob.err)
	nsock=$(sed -n 's/^P11SMIME_AGENT_SOCK=\([^;]*\);.*/\1/p' <<<"$env")
	npid=$(sed -n 's/^P11SMIME_AGENT_PID=\([0-9]*\);.*/\1/p' <<<"$env")
	if [ -n "$npid" ]; then
		AGENTS+=("$npid")
		P11SMIME_AGENT_SOCK=$nsock run_p11smime sign --signer rsa2048@example.org -i m.eml -o uid.eml
		assert_exit 3 "another uid's agent refuses us"
		assert_contains "$ERR" "uid 0 is refused"
		assert_file_absent uid.eml
		# And another uid cannot even reach ours: the directory is 0700.
		HOME=$TEST_TMP/nob setpriv --reuid=65534 --regid=65534 --clear-groups "$P11SMIME" sign --signer rsa2048@example.org \
			-i /dev/null -o /dev/null 2>nob2.err </dev/null
		RC=$?
		assert_exit 3 "uid 65534 cannot reach root's agent"
		assert_contains nob2.err "cannot reach the agent"
		kill -TERM "$npid"
	else
		fail "the agent as uid 65534 did not start"
		cat nob.err
	fi
	chmod 700 "$TEST_TMP"
else
	pass "not root or no setpriv: the other-uid check is skipped"
fi

# --------------------------------------------- SIGTERM removes the socket
sock=$P11SMIME_AGENT_SOCK
out=$("$P11SMIME" agent -k)
assert_eq "" "$( [ -e "$sock" ] && echo present)" "agent -k: the socket is gone"
[ -e "$(dirname "$sock")" ] && fail "its directory is left" || pass "its directory is gone"
case "$out" in *"unset P11SMIME_AGENT_SOCK;"*) pass "-k prints the unset commands" ;; *) fail "-k: $out" ;; esac
run_p11smime sign --signer rsa2048@example.org -i m.eml -o gone.eml
assert_exit 3 "no agent behind P11SMIME_AGENT_SOCK: exit 3"
assert_contains "$ERR" "cannot reach the agent"
assert_file_absent gone.eml
run_p11smime --pin-source "$PF" sign --no-agent --signer rsa2048@example.org -i m.eml -o gone.eml
assert_exit 0 "--no-agent works without it"

# ------------------------------------------- -D stays in the foreground
"$P11SMIME" --pin-source "$PF" agent -D >fg.env 2>fg.err &
fgpid=$!
AGENTS+=("$fgpid")
for _ in $(seq 1 100); do grep -q P11SMIME_AGENT_PID fg.env && break; sleep 0.1; done
eval "$(cat fg.env)"
assert_eq "$fgpid" "${P11SMIME_AGENT_PID:-}" "-D: the agent is the process we started"
run_p11smime sign --signer p256@example.org -i m.eml -o fg.eml
assert_exit 0 "-D: signs"
# Requests one after another are served by the thread of the one before,
# which waits a while for the next connection: no thread started per
# request (each start and end cost system calls and a TLB shootdown).
if command -v strace >/dev/null; then
	strace -f -o clones.trace -e trace=clone,clone3 -p "$fgpid" 2>/dev/null &
	stpid=$!
	for _ in $(seq 1 50); do grep -q . clones.trace 2>/dev/null && break; sleep 0.1; done
	sleep 0.5
	bad=0
	for i in 1 2 3 4 5; do
		"$P11SMIME" sign --signer p256@example.org -i m.eml -o "fg$i.eml" || bad=$((bad + 1))
	done
	kill -INT "$stpid" 2>/dev/null
	wait "$stpid" 2>/dev/null
	assert_eq 0 "$bad" "-D: five requests one after another"
	# (A next request that comes before the last one's thread is back
	# waiting gets a thread of its own: rare, allowed twice in five.)
	n=$(grep -c 'clone' clones.trace)
	[ "$n" -le 2 ] && pass "-D: $n threads started for five requests (the lingering one serves)" ||
		fail "-D: $n threads started for five requests"
fi
# SIGTERM while that thread waits for a connection: it ends at once, not
# when its wait runs out (30 s).
t0=$SECONDS
kill -TERM "$fgpid"
wait "$fgpid"
RC=$?
assert_exit 0 "-D: SIGTERM ends it with status 0"
[ $((SECONDS - t0)) -lt 15 ] && pass "-D: promptly, with an idle client thread" ||
	fail "-D: SIGTERM took $((SECONDS - t0)) s"
[ -e "$P11SMIME_AGENT_SOCK" ] && fail "-D: socket left" || pass "-D: socket removed"

# --------------------- the agent killed mid-request: exit 3, no output file
start_agent --pin-source "$PF" agent
rm -f slow.fifo && mkfifo slow.fifo
"$P11SMIME" sign --signer rsa2048@example.org -i slow.fifo -o killed.eml 2>killed.err &
cpid=$!
exec 7>slow.fifo
printf 'From: rsa2048@example.org\nSubject: killed\n\n' >&7
sleep 0.5
kill -KILL "$P11SMIME_AGENT_PID"
printf 'body\n' >&7
exec 7>&-
wait $cpid
RC=$?
assert_exit 3 "the agent killed mid-request: the client exits 3"
assert_contains killed.err "nothing was written"
assert_file_absent killed.eml
[ -z "$(ls -A . | grep -F .p11smime- || true)" ] && pass "no temporary file left" || fail "temporary files left"

# ------------------------------------------- a pulled token (mock module)
mock_token
export P11S_MOCK_REMOVED_FILE=$TEST_TMP/pulled
start_agent --pin-source "$PF" agent --signer mock@example.org
run_p11smime sign --signer mock@example.org -i m.eml -o mk1.eml
assert_exit 0 "mock: signs through the agent"
touch pulled
run_p11smime sign --signer mock@example.org -i m.eml -o mk2.eml
assert_exit 3 "mock: token pulled during the request: exit 3"
assert_contains "$ERR" "the token failed during the request"
assert_file_absent mk2.eml
run_p11smime sign --signer mock@example.org -i m.eml -o mk2.eml
assert_exit 3 "mock: still out: exit 3"
rm -f pulled
run_p11smime sign --signer mock@example.org -i m.eml -o mk3.eml
assert_exit 0 "mock: the token is back: the agent logged in again and signs"
assert_eq 2 "$(mock_log_count '^C_Login user_type=1')" "two logins: the first, and after the token came back"
"$P11SMIME" agent -k >/dev/null

# With a PIN that cannot be read again (env:), the agent says to restart it.
export AGENT_PIN=$PIN
start_agent --pin-source env:AGENT_PIN agent --signer mock@example.org
touch pulled
run_p11smime sign --signer mock@example.org -i m.eml -o mk4.eml
assert_exit 3 "mock, env: PIN: pulled: exit 3"
rm -f pulled
run_p11smime sign --signer mock@example.org -i m.eml -o mk4.eml
assert_exit 3 "mock, env: PIN: back, but no PIN to log in again: exit 3"
assert_contains "$ERR" "restart it"
"$P11SMIME" agent -k >/dev/null
unset P11S_MOCK_REMOVED_FILE
finish
