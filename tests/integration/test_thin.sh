#!/usr/bin/env bash
# The thin front end (src/front/thin.c): the p11smime executable needs no
# libcrypto and, for sign and decrypt through the agent, loads none; every
# such invocation gives the same output bytes (apart from signingTime,
# boundary and signature), reports, messages and exit codes as the whole
# command line's agent client (P11SMIME_FULL_CLI=1 forces that path); and
# what the thin path does not handle (--at, a config file, --help, usage
# errors) is handed over whole.
. "$(dirname "$0")/lib.sh"

new_token
PF="file:$PIN_FILE"
cd "$TEST_TMP" || exit 1
export TMPDIR=$TEST_TMP
AGENT_PID=
trap '_rc=$?; [ -n "$AGENT_PID" ] && kill -TERM "$AGENT_PID" 2>/dev/null; (exit $_rc); _t_on_exit' EXIT

# ------------------------------------------------ what the executable needs
if readelf -d "$P11SMIME" | grep NEEDED | grep -qE 'libcrypto|libssl|libp11|libjansson|libmilter|libp11smime'; then
	fail "the p11smime executable needs more than libc: $(readelf -d "$P11SMIME" | grep NEEDED | tr '\n' ' ')"
else
	pass "the p11smime executable needs no libcrypto, p11-kit, jansson, libmilter or libp11smime"
fi
ldd "$P11SMIME" | grep -q libcrypto && fail "ldd finds libcrypto under p11smime" ||
	pass "ldd: no libcrypto under p11smime"

env=$("$P11SMIME" --pin-source "$PF" agent --signer rsa2048@example.org) || { fail "agent did not start"; finish; }
eval "$env"
AGENT_PID=$P11SMIME_AGENT_PID

printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: thin\nDate: Sat, 28 Nov 2026 09:00:00 +0000\n\nHello Bob,\n\nall is well.\n' >m.eml

# The libraries a run maps: the thin path maps none of ours nor OpenSSL.
strace -f -e trace=openat -o thin.trace "$P11SMIME" sign --signer rsa2048@example.org -i m.eml -o t.eml 2>/dev/null
assert_file_present t.eml
if grep -E 'libcrypto|libp11smime|libp11-kit|libjansson|libmilter' thin.trace | grep -qv ENOENT; then
	fail "the thin path loaded: $(grep -oE '[a-z0-9_-]*(libcrypto|libp11smime|p11-kit|jansson|milter)[^"]*' thin.trace | sort -u | tr '\n' ' ')"
else
	pass "sign through the agent opens no libcrypto, libp11smime, p11-kit, jansson or libmilter"
fi
P11SMIME_FULL_CLI=1 strace -f -e trace=openat -o full.trace "$P11SMIME" sign --signer rsa2048@example.org -i m.eml -o t.eml 2>/dev/null
grep -v ENOENT full.trace | grep -q 'libcrypto' && pass "P11SMIME_FULL_CLI=1: the whole command line (libcrypto) runs" ||
	fail "P11SMIME_FULL_CLI=1 did not load the command line"
# The whole command line maps jansson only for a JSON report it renders, libmilter only
# for the milter (src/cli/lazy.c): a signature on the token here, without the agent.
strace -f -e trace=openat -o local.trace "$P11SMIME" --pin-source "$PF" sign --no-agent \
	--signer rsa2048@example.org -i m.eml -o l.eml 2>/dev/null
assert_file_present l.eml
if grep -v ENOENT local.trace | grep -qE 'libjansson|libmilter'; then
	fail "sign without --json mapped: $(grep -v ENOENT local.trace | grep -oE 'lib(jansson|milter)[^"]*' | sort -u | tr '\n' ' ')"
else
	pass "sign --no-agent without --json: no jansson, no libmilter mapped"
fi
strace -f -e trace=openat -o json.trace "$P11SMIME" --pin-source "$PF" --json sign --no-agent \
	--signer rsa2048@example.org -i m.eml -o l.eml >l.json 2>/dev/null
grep -v ENOENT json.trace | grep -q 'libjansson' && pass "with --json, jansson is mapped" ||
	fail "--json did not map jansson"
assert_json l.json '.signer | startswith("pkcs11:")' "the JSON report, through jansson loaded late"
grep -v ENOENT json.trace | grep -q 'libmilter' && fail "--json mapped libmilter" || pass "--json: still no libmilter"
LD_DEBUG=files "$P11SMIME" decrypt -i /dev/null -o /dev/null 2>ld.log >/dev/null
grep -q 'file=libcrypto' ld.log && fail "decrypt through the agent loaded libcrypto" ||
	pass "decrypt through the agent: LD_DEBUG shows no libcrypto"

# Normalise a signed message: the boundary and the signature are per run.
norm() {
	local b
	b=$(sed -n 's/.*boundary="\([^"]*\)".*/\1/p' "$1" | head -1)
	[ -n "$b" ] || b=NONE
	awk -v b="$b" '{ gsub(b, "BOUNDARY") } /^Content-Disposition: attachment; filename="smime.p7s"/ { print; exit } { print }' "$1"
}

# both LABEL KIND ARGS...: run ARGS thin, then with the whole CLI; the same exit code,
# standard error, and standard output (KIND sig: normalised; exact: byte for byte;
# none: not compared, the caller compares files).  Files named *.A by the first run
# are *.B in the second.
both() {
	local label=$1 kind=$2
	shift 2
	local args=("$@") bargs=() a
	for a in "${args[@]}"; do bargs+=("${a//.A/.B}"); done
	run_p11smime "${args[@]}"
	local rca=$RC
	cp "$OUT" o.A
	cp "$ERR" e.A
	P11SMIME_FULL_CLI=1 run_p11smime "${bargs[@]}"
	assert_eq "$rca" "$RC" "$label: the same exit code ($RC)"
	sed 's/\.B\b/.A/g' "$ERR" >e.B
	cmp -s e.A e.B && pass "$label: the same standard error" ||
		{ fail "$label: standard error differs"; diff e.A e.B | head; }
	case $kind in
	sig) cmp -s <(norm o.A) <(norm "$OUT") && pass "$label: the same standard output" ||
		{ fail "$label: standard output differs"; diff <(norm o.A) <(norm "$OUT") | head; } ;;
	exact) cmp -s o.A "$OUT" && pass "$label: the same standard output" ||
		{ fail "$label: standard output differs"; diff o.A "$OUT" | head; } ;;
	esac
	RCA=$rca
}
same_sig() { # FILE.A FILE.B LABEL
	cmp -s <(norm "$1") <(norm "$2") && pass "$3: the same message" ||
		{ fail "$3: messages differ"; diff <(norm "$1") <(norm "$2") | head; }
}

# ------------------------------------------------------------------ sign
both "sign RSA --json -o" exact --json sign --signer rsa2048@example.org -i m.eml -o s1.A
assert_exit 0 "sign RSA -o"
same_sig s1.A s1.B "sign RSA"
openssl cms -verify -CAfile "$CA_PEM" -in s1.A -out /dev/null 2>/dev/null && pass "OpenSSL verifies the thin path's signature" ||
	fail "the thin path's signature does not verify"
both "sign PSS --json -o" exact --json sign --signer rsa2048@example.org --pss -i m.eml -o s2.A
same_sig s2.A s2.B "sign PSS"
both "sign EC --json, standard output" sig --json sign --signer p256@example.org -i m.eml
assert_exit 0 "sign EC to standard output"
assert_contains e.A '"signer"'
both "sign --json -o -" sig --json sign --signer rsa2048@example.org -i m.eml -o -
both "sign -v" sig -v sign --signer rsa2048@example.org -i m.eml
assert_contains e.A "signature:"
RUN_STDIN=m.eml both "sign from standard input" sig sign --signer rsa2048@example.org
cp "$CERTS_DIR/rsa2048.pem" chain.pem
both "sign --opaque --chain (relative)" none sign --signer rsa2048@example.org --opaque --chain chain.pem -i m.eml -o s3.A
assert_exit 0 "sign --opaque --chain"
both "sign --detached-signature --outform PEM" none sign --signer rsa2048@example.org --detached-signature --outform PEM -i m.eml -o s4.A
assert_contains s4.A "BEGIN PKCS7"
# Replacing a file keeps its mode; a symbolic link keeps pointing at the replaced file.
printf old >s5.A
printf old >s5.B
chmod 640 s5.A s5.B
both "sign over an existing file" none sign --signer rsa2048@example.org -i m.eml -o s5.A
assert_eq "640 640" "$(stat -c %a s5.A) $(stat -c %a s5.B)" "a replaced file keeps its mode, both paths"
printf old >target.A
printf old >target.B
ln -s target.A s6.A
ln -s target.B s6.B
both "sign through a symbolic link" none sign --signer rsa2048@example.org -i m.eml -o s6.A
[ -L s6.A ] && assert_contains target.A "application/pkcs7-signature" ||
	fail "the link was replaced"

# ----------------------------------------------------------- sign errors
both "missing input" exact sign --signer rsa2048@example.org -i missing.eml -o x.A
assert_exit 4 "missing input"
assert_file_absent x.A
both "input is a directory" exact sign --signer rsa2048@example.org -i . -o x.A
both "output directory missing" exact sign --signer rsa2048@example.org -i m.eml -o nodir/x.A
assert_exit 4 "output directory missing"
both "output is a directory" exact sign --signer rsa2048@example.org -i m.eml -o .
both "output /dev/full" exact sign --signer rsa2048@example.org -i m.eml -o /dev/full
assert_exit 4 "a full device"
both "--chain missing" exact sign --signer rsa2048@example.org --chain nochain.pem -i m.eml -o x.A
both "no such signer" exact sign --signer nobody@example.org -i m.eml -o x.A
assert_exit 3 "no such signer"
both "--module of another module" exact --module "$P11S_MOCK_MODULE" sign --signer rsa2048@example.org -i m.eml -o x.A
assert_exit 2 "module mismatch: usage"
assert_contains e.A "is not the agent's module"
assert_file_absent x.A
both "--module the agent's" none --module "$SOFTHSM_MODULE" sign --signer rsa2048@example.org -i m.eml -o x.A
assert_exit 0 "--module naming the agent's module"
P11SMIME_AGENT_SOCK=$TEST_TMP/gone.sock both "agent gone" exact sign --signer rsa2048@example.org -i m.eml -o y.A
assert_exit 3 "agent gone"
assert_file_absent y.A
# Usage errors and --help are the command's own: handed over.
both "detached and opaque" exact sign --signer rsa2048@example.org --detached-signature --opaque -i m.eml
assert_exit 2 "usage error"
both "bad --digest" exact sign --signer rsa2048@example.org --digest md5 -i m.eml
both "bad --outform" exact sign --signer rsa2048@example.org --outform xml -i m.eml
both "unknown option" exact sign --signer rsa2048@example.org --bogus -i m.eml
both "no --signer" exact sign -i m.eml
both "sign --help" exact sign --help
both "--version" exact --version
both "--at (handed over)" sig sign --signer rsa2048@example.org --at "$(date -u -d +1day +%F)" -i m.eml
assert_exit 0 "sign --at through the agent"

# --------------------------------------------------------------- decrypt
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\nSecret %s\r\n' "$(head -c 100000 /dev/zero | tr '\0' 'y')" >pt.eml
openssl cms -encrypt -binary -in pt.eml -aes-128-cbc -recip "$CERTS_DIR/rsa2048.pem" -out rsa.p7m 2>/dev/null
openssl cms -encrypt -binary -in pt.eml -aes-256-gcm -recip "$CERTS_DIR/p256.pem" -out ec.p7m 2>/dev/null
openssl cms -encrypt -binary -in pt.eml -aes-128-cbc -recip "$CA_PEM" -out nobody.p7m 2>/dev/null
openssl cms -encrypt -binary -in pt.eml -aes-128-cbc -recip "$CERTS_DIR/rsa2048.pem" -outform DER -out rsa.der 2>/dev/null
both "decrypt RSA -o" exact decrypt -i rsa.p7m -o d1.A
assert_exit 0 "decrypt RSA"
cmp -s d1.A d1.B && pass "decrypt RSA: the same bytes" || fail "decrypt RSA: outputs differ"
assert_eq "600 600" "$(stat -c %a d1.A) $(stat -c %a d1.B)" "decrypt: a new file is 0600, both paths"
both "decrypt EC to standard output" exact decrypt -i ec.p7m
both "decrypt --entity --keep-line-ends" exact decrypt --entity --keep-line-ends -i rsa.p7m
both "decrypt --inform der" exact decrypt --inform der -i rsa.der
# The reports differ only in the time they judged the certificate at.
jqn() { jq -S 'del(.at, .recipient.at)' "$1" | sed 's/judged at [^)]*/judged at T/'; }
run_p11smime --json decrypt -i rsa.p7m
cp "$OUT" r.A
P11SMIME_FULL_CLI=1 run_p11smime --json decrypt -i rsa.p7m
cmp -s <(jqn r.A) <(jqn "$OUT") && pass "decrypt --json without -o: the same report on standard output" ||
	fail "decrypt --json reports differ"
run_p11smime --json decrypt -i nobody.p7m -o n.A
rca=$RC
cp "$OUT" r.A
cp "$ERR" e.A
P11SMIME_FULL_CLI=1 run_p11smime --json decrypt -i nobody.p7m -o n.B
assert_eq "$rca" "$RC" "decrypt for nobody: the same exit code ($RC)"
assert_eq 3 "$RC" "decrypt for nobody: exit 3"
cmp -s e.A "$ERR" && pass "decrypt for nobody: the same message" || { fail "decrypt for nobody: messages differ"; diff e.A "$ERR"; }
cmp -s <(jqn r.A) <(jqn "$OUT") && pass "decrypt for nobody: the same report" || fail "decrypt for nobody: reports differ"
assert_file_absent n.A
both "decrypt bad --inform" exact decrypt --inform xml -i rsa.p7m
assert_exit 2 "decrypt bad --inform"

# --------------------------------------- a config file: the whole CLI reads it
mkdir -p cfg/p11smime
printf 'signer = rsa2048@example.org\n' >cfg/p11smime/config
XDG_CONFIG_HOME=$TEST_TMP/cfg LD_DEBUG=files "$P11SMIME" sign -i m.eml -o c.eml 2>ld.log
RC=$?
assert_exit 0 "a config file's signer, through the agent"
grep -q 'file=libcrypto' ld.log && pass "a config file hands over to the whole command line" ||
	fail "a config file was not handed over"
printf 'bogus = 1\n' >cfg/p11smime/config
XDG_CONFIG_HOME=$TEST_TMP/cfg both "a malformed config file" exact sign --signer rsa2048@example.org -i m.eml
assert_exit 2 "a malformed config file"

# ------------------------------------- an installed tree, moved elsewhere
B=${P11S_BUILDDIR:?}
if [ -e "$B/libp11smime-cli.so" ]; then
	cmake --install "$B" --prefix "$TEST_TMP/prefix" >install.log 2>&1 || fail "cmake --install"
	mv "$TEST_TMP/prefix" "$TEST_TMP/moved"
	cli=$(find "$TEST_TMP/moved" -name libp11smime-cli.so)
	case $cli in
	*/p11smime/libp11smime-cli.so) pass "the command line is installed in a private directory ($cli)" ;;
	*) fail "libp11smime-cli.so installed at '$cli'" ;;
	esac
	"$TEST_TMP/moved/bin/p11smime" --version >v.out 2>v.err
	RC=$?
	assert_exit 0 "the moved installed p11smime loads its command line"
	assert_contains v.out "p11smime "
	"$TEST_TMP/moved/bin/p11smime" sign --signer rsa2048@example.org -i m.eml -o inst.eml 2>inst.err
	RC=$?
	assert_exit 0 "the installed p11smime signs through the agent"
	"$TEST_TMP/moved/bin/p11smime" --pin-source "$PF" sign --no-agent --signer rsa2048@example.org -i m.eml -o inst2.eml 2>inst2.err
	RC=$?
	assert_exit 0 "the installed p11smime signs alone (--no-agent)"
else
	pass "static build (P11S_SHARED=OFF): the command line is linked in"
fi

finish
