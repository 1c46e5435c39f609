#!/usr/bin/env bash
# Outputs leave nothing behind (issue 9): a closed pipe, kill -9 in the
# middle of -o FILE or of standard output, a full disk; -o over an existing
# file keeps its mode (and owner, as root), decrypt's plaintext is 0600, a
# symbolic link's target is replaced (the link stays), a dangling one is
# refused; write errors name the file and the system's reason.
. "$(dirname "$0")/lib.sh"

new_token
P=(--pin-source "file:$PIN_FILE")
SIGNER="pkcs11:token=$TOKEN_LABEL;id=%01;type=cert"
cd "$TEST_TMP" || exit 1
# Temporary files of p11smime go here, so that leftovers are seen.
mkdir spool
export TMPDIR=$TEST_TMP/spool

# A 3 MiB mail (more than stdout's 1 MiB in memory, more than a pipe holds).
{
	printf 'From: rsa2048@example.org\nTo: rsa2048@example.org\nSubject: big\n'
	printf 'Content-Type: text/plain; charset=us-ascii\n\n'
	head -c 2400000 /dev/urandom | base64 -w 76
} >big.eml
printf 'From: rsa2048@example.org\nSubject: small\nContent-Type: text/plain\n\nhello\n' >small.eml
# The same, encrypted for the token's RSA key (CBC: decrypt streams it).
printf 'Content-Type: text/plain\r\n\r\n' >pt.eml
head -c 3000000 /dev/urandom | base64 -w 76 | sed 's/$/\r/' >>pt.eml
openssl cms -encrypt -binary -aes-256-cbc -in pt.eml -recip "$CERTS_DIR/rsa2048.pem" \
	-outform DER -out big.p7m

leftovers() { # DIR: files p11smime may have left
	find "$1" -mindepth 1 -maxdepth 1 -name '.p11smime-*' | wc -l
}

# ------------------------------------------------------------ closed pipe
# Signals ignored by whoever started us would hide SIGPIPE: restore it.
env --default-signal=PIPE "$P11SMIME" "${P[@]}" decrypt --inform der -i big.p7m 2>pipe.err |
	head -c 100 >/dev/null
st=${PIPESTATUS[0]}
assert_eq 4 "$st" "decrypt | head -c 100: exit 4, not killed by SIGPIPE"
assert_contains pipe.err "cannot write to standard output: Broken pipe" \
	"a closed pipe is reported in words"
assert_eq 0 "$(leftovers spool)" "a closed pipe leaves no plaintext in \$TMPDIR"

env --default-signal=PIPE "$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i big.eml 2>pipe2.err |
	head -c 10 >/dev/null
st=${PIPESTATUS[0]}
assert_eq 4 "$st" "sign | head -c 10: exit 4"
assert_contains pipe2.err "Broken pipe" "sign says the pipe broke"

# ------------------------------------------------------------- kill -9
# decrypt reads big.p7m from a FIFO; half of it is given, then p11smime is
# killed while it waits for the rest, having written plaintext.
kill9() { # DIR [-o FILE]: start decrypt, feed half, kill -9 once it has written
	local dir=$1 pid fd size=0 i
	shift
	rm -f fifo
	mkfifo fifo
	"$P11SMIME" "${P[@]}" decrypt --inform der -i fifo "$@" >"$dir/stdout.part" 2>kill.err &
	pid=$!
	exec 3>fifo
	head -c $(($(stat -c %s big.p7m) / 2)) big.p7m >&3
	for i in $(seq 1 300); do
		size=0
		for fd in /proc/$pid/fd/*; do
			case $(readlink "$fd") in
			"$TEST_TMP"/*spool/* | "$TEST_TMP"/out/*) size=$(stat -L -c %s "$fd" 2>/dev/null || echo 0) ;;
			esac
			[ "$size" -gt 0 ] && break
		done
		[ "$size" -gt 0 ] && break
		sleep 0.1
	done
	kill -9 "$pid"
	wait "$pid" 2>/dev/null || true
	exec 3>&-
	[ "$size" -gt 0 ] || echo "note: decrypt had written nothing when killed"
	rm -f "$dir/stdout.part"
}
mkdir out
kill9 out -o out/plain.eml
assert_eq 0 "$(find out -mindepth 1 | wc -l)" "kill -9 during decrypt -o FILE leaves nothing beside FILE"
kill9 out
assert_eq 0 "$(leftovers spool)" "kill -9 during decrypt to standard output leaves nothing in \$TMPDIR"

# ---------------------------------------------------------- permissions
umask 022
printf 'old\n' >mine.eml
chmod 600 mine.eml
run_p11smime "${P[@]}" sign --signer "$SIGNER" -i small.eml -o mine.eml
assert_exit 0 "sign -o over an existing file"
assert_eq 600 "$(stat -c %a mine.eml)" "an existing 0600 file stays 0600"
assert_contains mine.eml "multipart/signed" "and holds the signed message"
run_p11smime "${P[@]}" sign --signer "$SIGNER" -i small.eml -o new.eml
assert_eq 644 "$(stat -c %a new.eml)" "a new file gets 0666 less the umask (022)"
umask 027
run_p11smime "${P[@]}" sign --signer "$SIGNER" -i small.eml -o new027.eml
assert_eq 640 "$(stat -c %a new027.eml)" "a new file gets 0666 less the umask (027)"
umask 077
run_p11smime "${P[@]}" sign --signer "$SIGNER" -i small.eml -o new077.eml
assert_eq 600 "$(stat -c %a new077.eml)" "a new file gets 0666 less the umask (077)"
umask 022

openssl cms -encrypt -binary -aes-256-cbc -in pt.eml -recip "$CERTS_DIR/rsa2048.pem" \
	-outform DER -out small.p7m
run_p11smime "${P[@]}" decrypt --inform der -i small.p7m -o plain.eml
assert_exit 0 "decrypt -o a new file"
assert_eq 600 "$(stat -c %a plain.eml)" "decrypt's plaintext is 0600 whatever the umask"
printf 'x\n' >shared.eml
chmod 640 shared.eml
run_p11smime "${P[@]}" decrypt --inform der -i small.p7m -o shared.eml
assert_eq 640 "$(stat -c %a shared.eml)" "decrypt over an existing 0640 file keeps 0640"
cmp -s shared.eml pt.eml && pass "and holds the plaintext" || fail "plaintext differs"

if [ "$(id -u)" = 0 ] && getent passwd nobody >/dev/null; then
	printf 'x\n' >owned.eml
	chown nobody:nogroup owned.eml
	run_p11smime "${P[@]}" sign --signer "$SIGNER" -i small.eml -o owned.eml
	assert_eq nobody:nogroup "$(stat -c %U:%G owned.eml)" "as root, an existing file keeps its owner and group"
fi

# ------------------------------------------- a text part read twice
# From a regular file, a 7-bit text part is read again from the file rather
# than kept in a temporary file; from a pipe it is kept.  Both must give the
# same signed entity: a clean part, an 8-bit one (re-encoded), a short one.
{
	printf 'From: rsa2048@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"\n\npre\n'
	printf -- '--b1\nContent-Type: text/plain\n\n'
	head -c 1600000 /dev/urandom | base64 -w 76
	printf -- '--b1\nContent-Type: text/plain; charset=utf-8\n\n'
	head -c 1500000 /dev/urandom | base64 -w 76 | sed '5000s/$/ caf\xc3\xa9/'
	printf -- '--b1\nContent-Type: text/plain\n\nshort\n--b1--\nepilogue\n'
} >mp.eml
run_p11smime "${P[@]}" sign --signer "$SIGNER" -i mp.eml -o mp.file
assert_exit 0 "sign a multipart file"
# Directly: run_p11smime keeps standard output in a variable, too large here.
cat mp.eml | "$P11SMIME" "${P[@]}" sign --signer "$SIGNER" >mp.pipe
entity() { sed -E 's/_p11s_[0-9a-f]+/_p11s_X/g' "$1" | awk '/application\/pkcs7-signature/ { exit } { print }'; }
entity mp.file >mp.file.ent
entity mp.pipe >mp.pipe.ent
cmp -s mp.file.ent mp.pipe.ent && pass "from a file and from a pipe: the same signed entity" ||
	fail "the entity signed from a file differs from the one signed from a pipe"
assert_contains mp.file "quoted-printable" "the 8-bit part was re-encoded"
for f in mp.file mp.pipe; do
	openssl cms -verify -in "$f" -CAfile "$CA_PEM" -out /dev/null 2>/dev/null &&
		pass "$f verifies" || fail "$f does not verify"
done

# -------------------------------------------------------------- symlinks
# A link to a pipe (/dev/stdout -> /proc/self/fd/1): written directly.
"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i small.eml -o /dev/stdout 2>devout.err | cat >devout.eml
assert_contains devout.eml "multipart/signed" "-o /dev/stdout into a pipe writes through the link"
mkdir real
printf 'old\n' >real/target.eml
chmod 640 real/target.eml
ln -s real/target.eml link.eml
run_p11smime "${P[@]}" sign --signer "$SIGNER" -i small.eml -o link.eml
assert_exit 0 "sign -o a symbolic link"
[ -L link.eml ] && pass "the link stays a link" || fail "the link was replaced by a file"
assert_contains real/target.eml "multipart/signed" "the file it points to holds the output"
assert_eq 640 "$(stat -c %a real/target.eml)" "and keeps its mode"
assert_eq 00 "$(leftovers real)$(leftovers .)" "no temporary file left"
ln -s real/nothing.eml dangling.eml
run_p11smime "${P[@]}" sign --signer "$SIGNER" -i small.eml -o dangling.eml
assert_exit 4 "sign -o a link to nothing is refused"
assert_contains "$ERR" "symbolic link to a file that does not exist" "and says why"
assert_file_absent real/nothing.eml "nothing is created through it"

# ------------------------------------------------------------- disk full
run_p11smime "${P[@]}" sign --signer "$SIGNER" -i small.eml -o /dev/full
assert_exit 4 "sign -o /dev/full"
assert_contains "$ERR" "cannot write '/dev/full': No space left on device" "names the file and the reason"
assert_not_contains "$ERR" "BIO routines" "no OpenSSL jargon"
"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i small.eml >/dev/full 2>full.err
st=$?
assert_eq 4 "$st" "sign >/dev/full: exit 4"
assert_contains full.err "cannot write to standard output: No space left on device" "standard output full, in words"

if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
	mkdir tiny
	# A 512 KiB file system in a mount namespace of its own.
	full_run() { # CMD...: run p11smime with tiny/ a 512 KiB tmpfs
		unshare -m bash -c 'mount -t tmpfs -o size=512k tmpfs tiny && "$@"; echo "rc=$?"; ls -A tiny' _ "$@"
	}
	full_run "$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i big.eml -o tiny/out.eml >full.out 2>full2.err
	assert_contains full.out "rc=4" "sign -o on a full disk: exit 4"
	assert_not_contains full.out "out.eml" "and no file"
	assert_not_contains full.out ".p11smime" "and no temporary file"
	assert_contains full2.err "cannot write 'tiny/out.eml': No space left on device" "names the file and the reason"
	full_run "$P11SMIME" "${P[@]}" decrypt --inform der -i big.p7m -o tiny/plain.eml >full.out 2>full3.err
	assert_contains full.out "rc=4" "decrypt -o on a full disk: exit 4"
	assert_not_contains full.out "plain.eml" "and no file"
	assert_contains full3.err "cannot write 'tiny/plain.eml': No space left on device" "a write error, not a bad message"
	# Standard output past 1 MiB spills to $TMPDIR; here that is full.
	TMPDIR=$TEST_TMP/tiny full_run "$P11SMIME" "${P[@]}" decrypt --inform der -i big.p7m >full4.out 2>full4.err
	assert_contains full4.out "rc=4" "decrypt with a full \$TMPDIR: exit 4"
	assert_contains full4.err "cannot write to standard output: No space left on device" \
		"standard output spilled to a full \$TMPDIR: a write error"
	assert_not_contains full4.out "Content-Type" "nothing reached standard output"
	# Standard output's own file system fills in the middle of the commit's
	# copy: of decrypt's spill (given back as it goes), and of sign's ranges
	# of the input.  Exit 4, and the file cut back to where it began.
	stdout_full() { # CMD...: run with standard output a file on the full tiny/
		full_run bash -c '"$@" >tiny/stdout.eml; echo "inner=$?"; stat -c "size=%s" tiny/stdout.eml' _ "$@"
	}
	stdout_full "$P11SMIME" "${P[@]}" decrypt --inform der -i big.p7m >full5.out 2>full5.err
	assert_contains full5.out "inner=4" "decrypt > a full disk: exit 4"
	assert_contains full5.out "size=0" "standard output's file cut back to empty"
	assert_contains full5.err "cannot write to standard output: No space left on device" "a write error, in words"
	stdout_full "$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i big.eml >full6.out 2>full6.err
	assert_contains full6.out "inner=4" "sign > a full disk: exit 4"
	assert_contains full6.out "size=0" "standard output's file cut back to empty"
	assert_contains full6.err "cannot write to standard output: No space left on device" "a write error, in words"
	# Past 4 MiB the cipher and the plaintext's writing run on a helper
	# thread: a disk that fills there is the same exit 4, message and no file.
	printf 'Content-Type: application/octet-stream\r\n\r\n' >mid.pt
	head -c 9000000 /dev/urandom | base64 -w 76 | sed 's/$/\r/' >>mid.pt
	mid_run() { # CMD...: run p11smime with tiny/ an 8 MiB tmpfs
		unshare -m bash -c 'mount -t tmpfs -o size=8m tmpfs tiny && "$@"; echo "rc=$?"; ls -A tiny' _ "$@"
	}
	for c in aes-256-cbc aes-256-gcm; do
		openssl cms -encrypt -binary -$c -in mid.pt -recip "$CERTS_DIR/rsa2048.pem" \
			-outform DER -out mid.p7m
		mid_run "$P11SMIME" "${P[@]}" decrypt --inform der -i mid.p7m -o tiny/plain.eml >mid.out 2>mid.err
		assert_contains mid.out "rc=4" "$c: decrypt -o of 12 MB on an 8 MiB disk: exit 4"
		assert_not_contains mid.out "plain.eml" "$c: and no file"
		assert_not_contains mid.out ".p11smime" "$c: and no temporary file"
		assert_contains mid.err "cannot write 'tiny/plain.eml': No space left on device" \
			"$c: names the file and the reason"
		"$P11SMIME" "${P[@]}" decrypt --inform der -i mid.p7m -o mid.out
		cmp -s mid.out mid.pt && pass "$c: with room, the same 12 MB decrypt gives the plaintext" ||
			fail "$c: a 12 MB decrypt gave other bytes than the plaintext"
		# From a pipe: GCM's ciphertext is kept (spooled) by the helper, for the tag.
		cat mid.p7m | "$P11SMIME" "${P[@]}" decrypt --inform der -o mid.out
		cmp -s mid.out mid.pt && pass "$c: the same from a pipe" ||
			fail "$c: a 12 MB decrypt from a pipe gave other bytes than the plaintext"
		rm -f mid.out
		if [ $c = aes-256-gcm ]; then
			# A byte changed past the helper's start: the tag says so, nothing is written.
			b=$(od -An -tu1 -j 8000000 -N1 mid.p7m | tr -d ' ')
			printf "$(printf '\\%03o' $(((b ^ 1) & 255)))" |
				dd of=mid.p7m bs=1 seek=8000000 conv=notrunc status=none
			"$P11SMIME" "${P[@]}" decrypt --inform der -i mid.p7m -o mid.out 2>midtag.err
			assert_eq 4 $? "GCM, 12 MB, a byte changed at 8 MB: exit 4"
			assert_contains midtag.err "AES-GCM tag mismatch" "the tag mismatch, in words"
			assert_file_absent mid.out
			cat mid.p7m | "$P11SMIME" "${P[@]}" decrypt --inform der >mid.out 2>midtag.err
			assert_eq 4 $? "the same from a pipe to standard output: exit 4"
			assert_eq 0 "$(stat -c %s mid.out)" "nothing reached standard output"
			rm -f mid.out
		fi
	done
fi

# ------------------------------------------------------- a slow pipe reader
# Standard output's spill reaches a pipe only after the commit, as the
# reader takes it.  A reader that is still asleep when p11smime has
# finished must get the same bytes as a file: the spill's pages are given
# back as they are copied, and a pipe must not still be looking at them
# (it was: the last, partly filled page of the spill came out as zeros).
"$P11SMIME" "${P[@]}" decrypt --inform der -i big.p7m 2>slow.err | { sleep 1; cat; } >slow.out
assert_eq "0 0" "${PIPESTATUS[*]}" "decrypt into a pipe read late"
cmp -s slow.out pt.eml && pass "a pipe read late gets the plaintext, byte for byte" ||
	fail "a pipe read late got other bytes than the plaintext ($(cmp slow.out pt.eml 2>&1))"
"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i big.eml -o big.signed
"$P11SMIME" "${P[@]}" sign --signer "$SIGNER" -i big.eml 2>slow2.err | { sleep 1; cat; } >slow.signed
assert_eq "0 0" "${PIPESTATUS[*]}" "sign into a pipe read late"
# The two differ only in the boundary and the signature: compare the signed part.
part() { awk '/^------=_p11s_/ { n++; next } n == 1' "$1"; }
part big.signed >big.part && part slow.signed >slow.part
[ -s big.part ] && cmp -s big.part slow.part && pass "a pipe read late gets the signed part whole" ||
	fail "a pipe read late got another signed part than -o FILE"

# ------------------------------------------------- a disk that fails writeback
# Past 24 MiB, an output file and standard output's spill are written to
# the disk as they grow, and what the disk has is dropped from the cache.
# Waiting for a step takes the file's writeback error with it (the commit's
# fsync would then say nothing), so an error there is the output's: exit 4
# and nothing, never a file or a copy of a spill that the disk did not keep.
if command -v strace >/dev/null; then
	printf 'Content-Type: application/octet-stream\r\n\r\n' >huge.pt
	head -c 30000000 /dev/urandom | base64 -w 76 | sed 's/$/\r/' >>huge.pt
	openssl cms -encrypt -binary -aes-256-cbc -in huge.pt -recip "$CERTS_DIR/rsa2048.pem" \
		-outform DER -out huge.p7m
	# The same message without a failure: the spill comes back from the disk whole.
	"$P11SMIME" "${P[@]}" decrypt --inform der -i huge.p7m >huge.stdout 2>huge.err
	assert_eq 0 $? "decrypt > FILE of a 40 MB message"
	cmp -s huge.stdout huge.pt && pass "the spill read back from the disk is the plaintext" ||
		fail "decrypt > FILE of a 40 MB message: other bytes than the plaintext"
	eio() { # CMD...: every sync_file_range() fails with EIO
		ASAN_OPTIONS=detect_leaks=0 strace -f -o /dev/null -e trace=sync_file_range \
			-e inject=sync_file_range:error=EIO "$@"
	}
	rm -f huge.out
	eio "$P11SMIME" "${P[@]}" decrypt --inform der -i huge.p7m -o huge.out 2>eio1.err
	assert_eq 4 $? "decrypt -o FILE, the disk failing writeback: exit 4"
	assert_contains eio1.err "cannot write 'huge.out': Input/output error" "names the file and the reason"
	assert_eq 0 "$( [ -e huge.out ] && echo 1 || echo 0)" "and no file"
	assert_eq 0 "$(leftovers .)" "and no temporary file"
	eio "$P11SMIME" "${P[@]}" decrypt --inform der -i huge.p7m >huge.stdout 2>eio2.err
	assert_eq 4 $? "decrypt > FILE, \$TMPDIR's disk failing writeback: exit 4"
	assert_contains eio2.err "Input/output error" "the reason, in words"
	assert_eq 0 "$(stat -c %s huge.stdout)" "nothing reached standard output"
	assert_eq 0 "$(ls -A spool | wc -l)" "no temporary file is left"
fi

finish
