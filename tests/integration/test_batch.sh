#!/usr/bin/env bash
# sign and decrypt --out-dir: many files with one login; a file that fails
# is named and stops nothing; the exit code is the worst file's; every
# output appears whole or not at all.  Also through the agent.
. "$(dirname "$0")/lib.sh"

new_token
P=(--pin-source "file:$PIN_FILE")
cd "$TEST_TMP" || exit 1
mkdir in out out2 dec dec2 dec3

for i in $(seq 1 12); do
	printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: batch %s\n\nMessage %s.\n%s\n' \
		"$i" "$i" "$(head -c 4000 /dev/zero | tr '\0' 'x')" >"in/m$i.eml"
done
# Malformed: a NUL at the start of a header line.
printf 'From: rsa2048@example.org\nTo: a@example.org\n\0X-Bad: 1\nSubject: lost\n\nbody\n' >in/bad.eml
files=(in/m1.eml in/m2.eml in/m3.eml in/m4.eml in/m5.eml in/m6.eml in/bad.eml in/m7.eml in/m8.eml
	in/m9.eml in/m10.eml in/m11.eml in/m12.eml)

verify_all() { # DIR LABEL
	local bad=0
	for i in $(seq 1 12); do
		if ! openssl cms -verify -CAfile "$CA_PEM" -in "$1/m$i.eml" -out "$1/m$i.txt" >/dev/null 2>&1 ||
			! grep -q "^Message $i\." "$1/m$i.txt"; then
			bad=$((bad + 1))
		fi
	done
	assert_eq 0 "$bad" "$2: every good file signed and verified by OpenSSL"
}

# ------------------------------------------------------------- sign
run_p11smime "${P[@]}" sign --signer rsa2048@example.org --out-dir out "${files[@]}"
assert_exit 4 "sign --out-dir: the malformed file makes the exit 4"
assert_contains "$ERR" "in/bad.eml: "
assert_contains "$ERR" "NUL byte"
assert_file_absent out/bad.eml
verify_all out "sign --out-dir"
assert_eq 1 "$(grep -c . "$ERR")" "one message, for the one bad file"

run_p11smime "${P[@]}" sign --signer rsa2048@example.org --out-dir out in/m1.eml in/missing.eml
assert_exit 4 "a missing file: exit 4"
assert_contains "$ERR" "in/missing.eml"

run_p11smime "${P[@]}" --json sign --signer p256@example.org --out-dir out2 in/m1.eml in/m2.eml
assert_exit 0 "sign --out-dir --json"
assert_eq 2 "$(jq -s 'length' "$OUT")" "one report per file on standard output"
assert_eq '"ecdsa"' "$(jq -s '.[1].signature_algorithm' "$OUT")" "the reports name ECDSA"

# Several workers: the same outputs, and the messages and reports in the order of the files.
mkdir out3 out4
run_p11smime "${P[@]}" sign --jobs 4 --signer rsa2048@example.org --out-dir out3 "${files[@]}"
assert_exit 4 "sign --jobs 4: the malformed file still makes the exit 4"
assert_eq 1 "$(grep -c . "$ERR")" "--jobs 4: one message, for the one bad file"
assert_contains "$ERR" "in/bad.eml: "
assert_file_absent out3/bad.eml
verify_all out3 "sign --jobs 4"
run_p11smime "${P[@]}" --json sign --jobs 3 --signer p256@example.org --out-dir out4 "${files[@]}"
assert_exit 4 "sign --json --jobs 3"
assert_eq "in/m1.eml in/m2.eml in/m3.eml in/m4.eml in/m5.eml in/m6.eml in/m7.eml in/m8.eml in/m9.eml in/m10.eml in/m11.eml in/m12.eml" \
	"$(jq -rs 'map(.file) | join(" ")' "$OUT")" "--jobs 3: one report per signed file, in the order of the files"
assert_eq "out4/m7.eml" "$(jq -rs '.[6].output' "$OUT")" "each report names its output"
assert_eq '"ecdsa"' "$(jq -s '.[11].signature_algorithm' "$OUT")" "the reports are the signer's"
# Past several groups of durable outputs (32 each, up to 128 when more are
# done): 400 files, a bad one among them, each report in order and each
# output in place.
mkdir many outmany
for i in $(seq 1 400); do
	printf 'From: p256@example.org\nTo: bob@example.net\nSubject: many %s\n\nMessage %s.\n' \
		"$i" "$i" >"many/n$i.eml"
done
cp in/bad.eml many/n150.eml
manyfiles=()
for i in $(seq 1 400); do manyfiles+=("many/n$i.eml"); done
# Not run_p11smime: it exports what was printed, and 399 reports are more
# than an environment variable may hold.
timeout -k 5 120 setsid -w "$P11SMIME" "${P[@]}" --json sign --jobs 2 --signer p256@example.org \
	--out-dir outmany "${manyfiles[@]}" </dev/null >many.out 2>many.err
assert_eq 4 "$?" "400 files, one bad: exit 4"
assert_eq 1 "$(grep -c . many.err)" "400 files: one message, for the bad one"
assert_eq 1 "$(grep -c '^p11smime: many/n150.eml: ' many.err)" "400 files: it names the bad one"
expect=$(for i in $(seq 1 400); do [ "$i" = 150 ] || printf 'many/n%s.eml\n' "$i"; done)
assert_eq "$expect" "$(jq -r '.file' many.out)" "400 files: a report for each good one, in order"
assert_eq 399 "$(find outmany -type f | wc -l)" "399 outputs and nothing else in the directory"
bad=0
for i in 1 32 33 128 129 149 151 200 333 400; do
	openssl cms -verify -CAfile "$CA_PEM" -in "outmany/n$i.eml" -out outmany.txt >/dev/null 2>&1 &&
		grep -q "^Message $i\." outmany.txt || bad=$((bad + 1))
done
assert_eq 0 "$bad" "400 files: the outputs verify, each with its own message"

for j in 0 65 x 2x; do
	run_p11smime "${P[@]}" sign --jobs "$j" --signer rsa2048@example.org --out-dir out3 in/m1.eml
	assert_exit 2 "--jobs $j is a usage error"
done
assert_contains "$ERR" "--jobs wants a number from 1 to 64"

# Usage errors
run_p11smime "${P[@]}" sign --signer rsa2048@example.org --out-dir out -o x.eml in/m1.eml
assert_exit 2 "--out-dir with -o"
run_p11smime "${P[@]}" sign --signer rsa2048@example.org --out-dir out
assert_exit 2 "--out-dir without files"
run_p11smime "${P[@]}" sign --signer rsa2048@example.org --out-dir in/m1.eml in/m2.eml
assert_exit 2 "--out-dir not a directory"
mkdir -p other && cp in/m1.eml other/
run_p11smime "${P[@]}" sign --signer rsa2048@example.org --out-dir out in/m1.eml other/m1.eml
assert_exit 2 "two files of the same name"
assert_contains "$ERR" "would both be written"
# The first file (in command-line order) whose name an earlier one has, with that one.
cp in/m2.eml other/
run_p11smime "${P[@]}" sign --signer rsa2048@example.org --out-dir out in/m2.eml in/m1.eml other/m2.eml other/m1.eml
assert_exit 2 "two pairs of the same names"
assert_contains "$ERR" "'in/m2.eml' and 'other/m2.eml' would both be written to 'out/m2.eml'"
run_p11smime "${P[@]}" sign --signer rsa2048@example.org --out-dir out in/m1.eml in/.. other/m1.eml
assert_exit 2 "a file that is no file, before a repeated name"
assert_contains "$ERR" "'in/..' does not name a file"
run_p11smime "${P[@]}" sign --signer nobody@example.org --out-dir out in/m1.eml
assert_exit 3 "an unknown signer stops the batch before any file"

# ------------------------------------------------------------- decrypt
for i in 1 2 3; do
	openssl cms -encrypt -in "in/m$i.eml" -aes-256-cbc -recip "$CERTS_DIR/rsa2048.pem" -out "in/e$i.p7m" 2>/dev/null
	openssl cms -encrypt -in "in/m$i.eml" -aes-128-gcm -recip "$CERTS_DIR/p256.pem" -out "in/g$i.p7m" 2>/dev/null
done
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out outsider.key 2>/dev/null
SAN_EMAIL=outsider@example.org ca_issue key:outsider.key outsider.pem smime-rsa >/dev/null
openssl cms -encrypt -in in/m4.eml -aes-256-cbc -recip outsider.pem -out in/nobody.p7m 2>/dev/null
dfiles=(in/e1.p7m in/g1.p7m in/nobody.p7m in/e2.p7m in/g2.p7m in/e3.p7m in/g3.p7m)

run_p11smime "${P[@]}" decrypt --out-dir dec "${dfiles[@]}"
assert_exit 3 "decrypt --out-dir: the message for nobody on the token makes the exit 3"
assert_contains "$ERR" "in/nobody.p7m: "
assert_file_absent dec/nobody.p7m
bad=0
for f in e1 g1 e2 g2 e3 g3; do
	n=${f#?}
	grep -q "^Message $n\." "dec/$f.p7m" || bad=$((bad + 1))
	[ "$(stat -c %a "dec/$f.p7m")" = 600 ] || bad=$((bad + 1))
done
assert_eq 0 "$bad" "the other six decrypted (mode 0600)"
run_p11smime "${P[@]}" --json decrypt --jobs 1 --out-dir dec3 "${dfiles[@]}"
assert_exit 3 "decrypt --jobs 1: the same exit"
assert_eq "in/e1.p7m in/g1.p7m in/nobody.p7m in/e2.p7m in/g2.p7m in/e3.p7m in/g3.p7m" \
	"$(jq -rs 'map(.file) | join(" ")' "$OUT")" "decrypt --json: a report per file, in order (the failed one too)"
same=0
for f in e1 g1 e2 g2 e3 g3; do cmp -s "dec/$f.p7m" "dec3/$f.p7m" && same=$((same + 1)); done
assert_eq 6 "$same" "--jobs 1 decrypts the same bytes as the default"

# ----------------------------------------------- one login for the batch
mock_token
run_p11smime "${P[@]}" sign --signer mock@example.org --out-dir out2 in/m1.eml in/m2.eml in/m3.eml in/m4.eml
assert_exit 0 "mock: a batch of four"
assert_eq 1 "$(mock_log_count '^C_Login user_type=1')" "one C_Login for four messages"
assert_eq 4 "$(mock_log_count '^C_Sign .*data_len=[0-9]+$')" "four signatures"
mock_log_reset
run_p11smime "${P[@]}" sign --jobs 4 --signer mock@example.org --out-dir out2 in/m1.eml in/m2.eml in/m3.eml in/m4.eml in/m5.eml
assert_exit 0 "mock: a batch of five, four at once"
assert_eq 1 "$(mock_log_count '^C_Login user_type=1')" "--jobs 4: still one C_Login"
assert_eq 5 "$(mock_log_count '^C_Sign .*data_len=[0-9]+$')" "five signatures"

# A wrong PIN costs one try, not one per file or per worker.
mkdir mdec
for i in 1 2 3 4; do
	openssl cms -encrypt -in "in/m$i.eml" -aes-256-cbc -recip "$P11S_MOCK_CERT" -out "in/k$i.p7m" 2>/dev/null
done
mock_log_reset
P11S_MOCK_PIN=999999 run_p11smime "${P[@]}" decrypt --jobs 2 --out-dir mdec in/k1.p7m in/k2.p7m in/k3.p7m in/k4.p7m
assert_exit 3 "decrypt --out-dir with a wrong PIN: exit 3"
assert_eq 1 "$(mock_log_count '^C_Login user_type=1')" "one C_Login for four files and two workers"
assert_eq 4 "$(grep -c 'PIN' "$ERR")" "each file says the PIN was refused"
assert_contains "$ERR" "not trying it again"
assert_eq 0 "$(find mdec -type f | wc -l)" "nothing written"
new_token

# ------------------------------------------------------- through the agent
eval "$("$P11SMIME" "${P[@]}" agent --signer rsa2048@example.org)" >/dev/null
[ -S "${P11SMIME_AGENT_SOCK:-}" ] && pass "agent started" || fail "agent did not start"
run_p11smime sign --signer rsa2048@example.org --out-dir out2 "${files[@]}"
assert_exit 4 "agent: sign --out-dir, the malformed file makes the exit 4"
assert_contains "$ERR" "in/bad.eml: "
assert_contains "$ERR" "NUL byte"
assert_file_absent out2/bad.eml
verify_all out2 "agent: sign --out-dir"
run_p11smime decrypt --out-dir dec2 "${dfiles[@]}"
assert_exit 3 "agent: decrypt --out-dir, exit 3 for the message for nobody"
assert_contains "$ERR" "in/nobody.p7m: "
same=0
for f in e1 g1 e2 g2 e3 g3; do cmp -s "dec/$f.p7m" "dec2/$f.p7m" && same=$((same + 1)); done
assert_eq 6 "$same" "agent: the same decrypted bytes as without it"
# Several workers through the agent: the messages and reports in the order
# of the files, as without it (each worker's requests print into its own
# buffers), and the outputs committed in groups: one sync of the file
# system, no fsync per file (each output used to be committed, fsync and
# all, by its own request).
mkdir out5 out6
run_p11smime --json sign --jobs 3 --signer rsa2048@example.org --out-dir out5 "${files[@]}"
assert_exit 4 "agent: sign --json --jobs 3"
assert_eq "in/m1.eml in/m2.eml in/m3.eml in/m4.eml in/m5.eml in/m6.eml in/m7.eml in/m8.eml in/m9.eml in/m10.eml in/m11.eml in/m12.eml" \
	"$(jq -rs 'map(.file) | join(" ")' "$OUT")" "agent, --jobs 3: one report per signed file, in the order of the files"
assert_eq "out5/m7.eml" "$(jq -rs '.[6].output' "$OUT")" "agent: each report names its output"
assert_eq 1 "$(grep -c . "$ERR")" "agent, --jobs 3: one message, for the one bad file"
assert_contains "$ERR" "in/bad.eml: "
assert_file_absent out5/bad.eml
verify_all out5 "agent: sign --jobs 3"
if command -v strace >/dev/null; then
	ASAN_OPTIONS=detect_leaks=0 strace -f -o trace -e trace=fsync,fdatasync,syncfs \
		"$P11SMIME" sign --jobs 1 --signer rsa2048@example.org --out-dir out6 in/m1.eml in/m2.eml \
		in/m3.eml in/m4.eml >/dev/null 2>strace.err
	assert_eq 0 $? "agent: sign --out-dir of 4 files under strace"
	assert_eq 0 "$(grep -c 'fsync(' trace)" "agent: no fsync per output"
	assert_eq 1 "$(grep -c 'syncfs(' trace)" "agent: one syncfs for the group of 4 outputs"
	verify_all_n() { # DIR N
		local bad=0
		for i in $(seq 1 "$2"); do
			openssl cms -verify -CAfile "$CA_PEM" -in "$1/m$i.eml" -out /dev/null >/dev/null 2>&1 ||
				bad=$((bad + 1))
		done
		echo "$bad"
	}
	assert_eq 0 "$(verify_all_n out6 4)" "agent: the 4 outputs of the group are in place and verify"
	# One connection a worker, whatever its files do: a malformed one (the
	# agent's refusal) and a missing one (nothing sent) in the middle leave
	# it usable for the next.
	mkdir out8
	ASAN_OPTIONS=detect_leaks=0 strace -f -o trace8 -e trace=connect \
		"$P11SMIME" sign --jobs 1 --signer rsa2048@example.org --out-dir out8 in/m1.eml in/bad.eml \
		in/m2.eml in/missing.eml in/m3.eml in/m4.eml >/dev/null 2>strace8.err
	assert_eq 4 $? "agent: a bad and a missing file among six: exit 4"
	assert_eq 1 "$(grep -c 'connect(' trace8)" "agent: one connection for the worker's six files"
	assert_eq 2 "$(grep -c 'in/bad.eml: \|in/missing.eml: ' strace8.err)" "agent: the two failures named"
	assert_eq 0 "$(verify_all_n out8 4)" "agent: the four good files signed on that connection"
	mkdir out9
	ASAN_OPTIONS=detect_leaks=0 strace -f -o trace9 -e trace=connect \
		"$P11SMIME" sign --jobs 2 --signer rsa2048@example.org --out-dir out9 "${files[@]}" >/dev/null 2>&1
	n=$(grep -c 'connect(' trace9)
	[ "$n" -ge 1 ] && [ "$n" -le 2 ] && pass "agent: --jobs 2, $n connections for 13 files" ||
		fail "agent: --jobs 2, $n connections for 13 files"
	# stand_in NAME [drop]: sign --out-dir of in/m1..m3.eml into outNAME
	# through tests/integration/old_agent.py (strace of its connects in
	# traceNAME, stderr in NAME.err); the exit code.
	stand_in() {
		local name=$1 rc pid
		mkdir "out$name"
		python3 "$(dirname "$0")/old_agent.py" "$TEST_TMP/$name.sock" "$TEST_TMP/$name.ready" ${2:-} &
		pid=$!
		for _ in $(seq 1 50); do [ -e "$TEST_TMP/$name.ready" ] && break; sleep 0.1; done
		P11SMIME_AGENT_SOCK=$TEST_TMP/$name.sock ASAN_OPTIONS=detect_leaks=0 strace -f -o "trace$name" \
			-e trace=connect "$P11SMIME" sign --jobs 1 --signer rsa2048@example.org --out-dir "out$name" \
			in/m1.eml in/m2.eml in/m3.eml >/dev/null 2>"$name.err"
		rc=$?
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		return $rc
	}
	# outputs NAME: how many of the three files have the stand-in's output
	outputs() { cat "out$1/m1.eml" "out$1/m2.eml" "out$1/m3.eml" | grep -c 'from the older agent'; }
	if command -v python3 >/dev/null; then
		# An agent that does not offer "reuse" (the first wire format): a
		# connection for each file, and every file done.
		stand_in old
		assert_eq 0 $? "an older agent: sign --out-dir of 3 files"
		assert_eq 3 "$(grep -c 'connect(' traceold)" "an older agent: a connection for each file"
		assert_eq 3 "$(outputs old)" "an older agent: each file has its output"
		# An agent that offers "reuse" but closes the kept connection
		# between two files (its idle timeout, a restart): each next file
		# is sent again on a new connection, and every file is done.
		stand_in drop drop
		assert_eq 0 $? "a kept connection closed between files: sign --out-dir of 3 files"
		assert_eq 3 "$(grep -c 'connect(' tracedrop)" "a kept connection closed: a new one for each next file"
		assert_eq 3 "$(outputs drop)" "a kept connection closed: each file has its output"
		assert_eq 0 "$(wc -c <drop.err)" "a kept connection closed: nothing said about it"
	fi
else
	echo "# strace is not installed: the agent's group sync is not counted"
fi
# A file system that fills up during an agent batch (a 512 KiB tmpfs in a
# mount namespace of the client's): the output too large for it fails,
# named, with the system's reason; the others are in place, whole; no
# temporary file is left; exit 4.  One request at a time: with two, a small
# output written while the large one holds the whole file system would
# fail too.
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
	mkdir tiny
	{
		printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: big\n\n'
		for i in $(seq 1 14000); do printf 'Line %05d of a mail too large for the file system.\n' "$i"; done
	} >in/big.eml
	unshare -m bash -c 'mount -t tmpfs -o size=512k tmpfs tiny && "$@"; echo "rc=$?"; ls -A tiny' _ \
		"$P11SMIME" sign --jobs 1 --signer rsa2048@example.org --out-dir tiny in/m1.eml in/m2.eml \
		in/big.eml in/m3.eml in/m4.eml >full.out 2>full.err
	assert_contains full.out "rc=4" "agent: sign --out-dir onto a full file system: exit 4"
	assert_contains full.err "in/big.eml: cannot write 'tiny/big.eml': No space left on device" \
		"agent: the output that did not fit is named, with the reason"
	assert_eq 1 "$(grep -c . full.err)" "agent: one message, for that file"
	assert_eq "m1.eml m2.eml m3.eml m4.eml" "$(grep -v '^rc=' full.out | sort | tr '\n' ' ' | sed 's/ $//')" \
		"agent: the other outputs are in place, and nothing else (no temporary file)"
fi
"$P11SMIME" agent -k >/dev/null
finish
