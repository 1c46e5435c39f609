#!/usr/bin/env bash
# sign > FILE of a large regular file (issue 11): a clean text part goes to
# standard output as ranges of the input, copied from it at the commit, not
# through a temporary file.  The message is the one -o FILE writes (it
# verifies, its content is the input's), from a pipe too; a failed sign
# leaves standard output empty; an input changed while it is copied to
# standard output is an error and what was written is taken back.
. "$(dirname "$0")/lib.sh"

new_token
P=(--pin-source "file:$PIN_FILE")
SIGNER="pkcs11:token=$TOKEN_LABEL;id=%01;type=cert"
cd "$TEST_TMP" || exit 1
mkdir spool
export TMPDIR=$TEST_TMP/spool

# 8 MiB of 76-character lines, LF and CRLF (past stdout's 1 MiB in memory).
head -c 6000000 /dev/urandom | base64 -w 76 >body.lf
sed 's/$/\r/' body.lf >body.crlf
{
	printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: large\n'
	printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n'
	cat body.lf
} >lf.eml
{
	printf 'From: rsa2048@example.org\r\nTo: bob@example.net\r\nSubject: large\r\n'
	printf 'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n'
	cat body.crlf
} >crlf.eml
size=$(stat -c %s lf.eml)

# The signed content as OpenSSL extracts it, past its header fields (LF).
content() { # SIGNED OUT
	openssl cms -verify -in "$1" -CAfile "$CA_PEM" -out "$2.ent" 2>"$2.err" || return 1
	tr -d '\r' <"$2.ent" | sed '1,/^$/d' >"$2"
}

for k in lf crlf; do
	"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i $k.eml >$k.stdout 2>$k.err
	assert_eq 0 $? "sign -i $k.eml > FILE"
	run_p11smime "${P[@]}" sign --signer "$SIGNER" -i $k.eml -o $k.file
	assert_exit 0 "sign -i $k.eml -o FILE"
	content $k.stdout $k.stdout.body && pass "$k: the stdout message verifies" ||
		fail "$k: the stdout message does not verify: $(cat $k.stdout.body.err)"
	content $k.file $k.file.body && pass "$k: the -o message verifies" ||
		fail "$k: the -o message does not verify"
	cmp -s $k.stdout.body body.lf && pass "$k: stdout's signed content is the input's" ||
		fail "$k: stdout's signed content is not the input's"
	cmp -s $k.stdout.body.ent $k.file.body.ent && pass "$k: stdout and -o carry the same entity" ||
		fail "$k: stdout and -o carry different entities"
	# Apart from the boundary and the signature, the same bytes.
	cut=$(grep -c '' $k.file)
	assert_eq "$(stat -c %s $k.file)" "$(stat -c %s $k.stdout)" "$k: stdout and -o the same size"
	cmp -s <(sed 's/_p11s_[0-9a-f]*/_p11s_B/' $k.stdout | head -n $((cut - 20))) \
		<(sed 's/_p11s_[0-9a-f]*/_p11s_B/' $k.file | head -n $((cut - 20))) &&
		pass "$k: stdout's message is -o's up to the signature" ||
		fail "$k: stdout's message differs from -o's before the signature"
	# The file's line ends are kept: the part is the input's own bytes.
	grep -c $'\r$' $k.stdout >$k.crs
	if [ $k = crlf ]; then
		assert_eq "$(grep -c '' $k.stdout)" "$(cat $k.crs)" "crlf: every line of the output ends in CRLF"
	else
		assert_eq 0 "$(cat $k.crs)" "lf: no line of the output ends in CRLF"
	fi
done

# Clean for 3 MiB, then an 8-bit byte: the part written ahead (ranges
# included) is taken back and the part is encoded; the same as -o FILE.
{
	printf 'From: rsa2048@example.org\nContent-Type: text/plain; charset=utf-8\n\n'
	head -c 3000000 body.lf
	printf 'caf\xc3\xa9\n'
	tail -c 2000000 body.lf
} >dirty.eml
"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i dirty.eml >dirty.stdout 2>dirty.err
assert_eq 0 $? "sign -i dirty.eml > FILE (clean at first, then 8-bit)"
run_p11smime "${P[@]}" sign --signer "$SIGNER" -i dirty.eml -o dirty.file
assert_exit 0 "sign -i dirty.eml -o FILE"
assert_contains dirty.stdout "Content-Transfer-Encoding: quoted-printable" \
	"the part that turned 8-bit is encoded"
content dirty.stdout dirty.stdout.body && content dirty.file dirty.file.body &&
	cmp -s dirty.stdout.body.ent dirty.file.body.ent &&
	pass "taken back: stdout's message verifies and carries -o's entity" ||
	fail "taken back: stdout's message does not verify or differs from -o's"

# Appended to the input itself: its ranges would grow as they are copied.
cp lf.eml self.eml
"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i self.eml >>self.eml 2>self.err
assert_eq 0 $? "sign -i self.eml >> self.eml"
tail -c +$((size + 1)) self.eml >self.signed
content self.signed self.body && cmp -s self.body body.lf &&
	pass ">> the input: the appended message verifies, its content is the input's" ||
	fail ">> the input: the appended message does not verify: $(cat self.body.err)"

# From a pipe: the spill file, as before.
cat lf.eml | "$P11SMIME" "${P[@]}" sign --signer "$SIGNER" >pipe.stdout 2>pipe.err
assert_eq 0 $? "cat lf.eml | sign > FILE"
content pipe.stdout pipe.body && cmp -s pipe.body body.lf &&
	pass "from a pipe: it verifies, the content is the input's" ||
	fail "from a pipe: the message does not verify or carries other content"
# Standard input that is the file itself is referenced as -i is.
"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" <crlf.eml >stdin.stdout 2>stdin.err
assert_eq 0 $? "sign < crlf.eml > FILE"
content stdin.stdout stdin.body && cmp -s stdin.body body.lf &&
	pass "< FILE: it verifies, the content is the input's" ||
	fail "< FILE: the message does not verify or carries other content"

# A sign that fails leaves standard output empty.
"$P11SMIME" "${P[@]}" sign --signer "pkcs11:token=$TOKEN_LABEL;id=%7f;type=cert" -i lf.eml \
	>bad.stdout 2>bad.err
st=$?
[ "$st" -ne 0 ] && pass "sign with a missing signer fails" || fail "sign with a missing signer: exit 0"
assert_eq 0 "$(stat -c %s bad.stdout)" "a failed sign writes nothing to standard output"

# The content is not written into a temporary file and copied again: what
# goes to the spill file is the first MiB and the signature; the rest is
# read from the input at the commit, straight into standard output.
if command -v strace >/dev/null; then
	ASAN_OPTIONS=detect_leaks=0 strace -f -o trace -e trace=write,pwrite64,writev \
		"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i lf.eml >strace.stdout 2>strace.err
	assert_eq 0 $? "sign > FILE under strace"
	spilled=$(awk '/^[0-9]+ +(write|pwrite64|writev)\([0-9]+,/ { split($2, a, /[(,]/); n = $NF
		if (a[2] != 1 && a[2] != 2 && n ~ /^[0-9]+$/) s += n } END { print s + 0 }' trace)
	to_stdout=$(awk '/^[0-9]+ +(write|pwrite64|writev)\(1,/ { n = $NF; if (n ~ /^[0-9]+$/) s += n } END { print s + 0 }' trace)
	[ "$spilled" -lt $((size / 4)) ] &&
		pass "sign > FILE spools $spilled bytes for a $size-byte input" ||
		fail "sign > FILE spooled $spilled bytes for a $size-byte input"
	assert_eq "$(stat -c %s strace.stdout)" "$to_stdout" "standard output got each byte once"
	assert_ls=$(ls -A spool | wc -l)
	assert_eq 0 "$assert_ls" "no temporary file is left"

	# The input rewritten while the commit copies it (the same size, other
	# bytes): each pread64 (the commit's reads of the spill file and of the
	# input, 256 KiB at a time) is held for a tenth of a second, so the
	# copy of this 8 MB input takes seconds; the first bytes on standard
	# output show that the commit has begun.
	cp lf.eml change.eml
	# A file changed in the current tick of the kernel's clock is not referenced.
	sleep 0.1
	ASAN_OPTIONS=detect_leaks=0 strace -f -o /dev/null -e trace=pread64 \
		-e inject=pread64:delay_enter=100000 \
		"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i change.eml >change.stdout 2>change.err &
	pid=$!
	for _ in $(seq 600); do
		[ -s change.stdout ] && break
		sleep 0.05
	done
	assert_eq 1 "$([ -s change.stdout ] && echo 1)" "the commit began (header fields written)"
	printf 'tampered' | dd of=change.eml bs=1 seek=100000 conv=notrunc status=none
	wait $pid
	st=$?
	assert_eq 4 "$st" "an input changed during the copy: exit 4"
	assert_contains change.err "the input changed while it was signed" \
		"an input changed during the copy is named"
	assert_eq 0 "$(stat -c %s change.stdout)" "what was copied to standard output is taken back"

	# The same onto a mailbox opened for appending (>>): what was taken
	# back is this message, not the mailbox before it (the offset of an
	# O_APPEND file says 0 before the first write: the commit took it
	# for the start and emptied the mailbox).
	cp lf.eml change.eml
	printf 'From someone Sat Dec  5 05:00:00 2026\nSubject: an earlier mail\n\nkept\n' >mbox
	cp mbox mbox.before
	sleep 0.1
	ASAN_OPTIONS=detect_leaks=0 strace -f -o /dev/null -e trace=pread64 \
		-e inject=pread64:delay_enter=100000 \
		"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i change.eml >>mbox 2>append.err &
	pid=$!
	for _ in $(seq 600); do
		[ "$(stat -c %s mbox)" -gt "$(stat -c %s mbox.before)" ] && break
		sleep 0.05
	done
	printf 'tampered' | dd of=change.eml bs=1 seek=100000 conv=notrunc status=none
	wait $pid
	assert_eq 4 $? ">> MAILBOX, the input changed during the copy: exit 4"
	assert_contains append.err "(what was written is taken back)" ">> MAILBOX: taken back"
	cmp -s mbox mbox.before && pass ">> MAILBOX: the mailbox is as it was" ||
		fail ">> MAILBOX: the mailbox changed ($(stat -c %s mbox) bytes, $(stat -c %s mbox.before) before)"
fi

# >> MAILBOX that succeeds: the mailbox's mail, then the signed message.
printf 'From someone Sat Dec  5 05:00:00 2026\nSubject: an earlier mail\n\nkept\n' >mbox2
"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i lf.eml >>mbox2 2>append2.err
assert_eq 0 $? "sign >> MAILBOX"
sed '1,4d' mbox2 >mbox2.msg
[ "$(head -n 4 mbox2 | tail -n 1)" = kept ] && content mbox2.msg mbox2.body && cmp -s mbox2.body body.lf &&
	pass ">> MAILBOX: the earlier mail, then a message that verifies" ||
	fail ">> MAILBOX: the mailbox does not hold the earlier mail and the message"

# ------------------------------------------------ a part dirty past 4 MiB
# A part that looks clean is written ahead from the file, its digest on the
# helper thread past 4 MiB, and needs an encoding at its last line: it is
# taken back (the helper synced, the digest as it was at the mark) and
# encoded.  The same entity as from a pipe, which is scanned first.
{
	printf 'From: rsa2048@example.org\nSubject: late\nContent-Type: text/plain; charset=utf-8\n\n'
	head -c 7000000 /dev/urandom | base64 -w 76
	printf 'caf\xc3\xa9 at the very end\n'
} >late.eml
"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i late.eml -o late.file
assert_eq 0 $? "sign -o of a 9 MB part that is dirty at its end"
cat late.eml | "$P11SMIME" "${P[@]}" sign --signer "$SIGNER" >late.pipe
assert_eq 0 $? "the same from a pipe"
content late.file late.file.c && content late.pipe late.pipe.c && cmp -s late.file.c late.pipe.c &&
	pass "taken back and encoded: it verifies, the same entity as from a pipe" ||
	fail "the part taken back does not verify, or differs from the pipe's"
assert_contains late.file.c.ent "quoted-printable" "the part is quoted-printable"

finish
