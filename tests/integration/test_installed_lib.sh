#!/usr/bin/env bash
# The installed library is usable from the installed files alone:
# `cmake --install` into a temporary prefix, every public header compiles on
# its own, examples/sign_and_validate.c builds with nothing but
# `pkg-config --cflags --libs p11smime`, signs on a fresh SoftHSM token
# (openssl cms -verify accepts it), and prints the verdicts that the
# installed CLI gives for the same certificates.
. "$(dirname "$0")/lib.sh"

B=${P11S_BUILDDIR:?}
if [ ! -e "$B/libp11smime.so" ]; then
	pass "static build (P11S_SHARED=OFF): nothing to install as a library"
	finish
fi
P=$TEST_TMP/prefix
cmake --install "$B" --prefix "$P" >"$TEST_TMP/install.log" 2>&1
RC=$?
assert_exit 0 "cmake --install into a temporary prefix"

pc=$(find "$P" -name p11smime.pc | head -n1)
[ -n "$pc" ] && pass "p11smime.pc installed" || fail "no p11smime.pc under $P"
export PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(pkg-config --variable=libdir p11smime)
soname=$(readelf -d "$B/libp11smime.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
assert_file_present "$libdir/$soname"
assert_file_present "$libdir/libp11smime.so"
assert_file_present "$P/bin/p11smime"
assert_file_present "$P/share/man/man1/p11smime-sign.1"
for h in mime listing util; do
	assert_file_absent "$P/include/p11smime/$h.h"
done
# Declarations and includes only: comments may say where a value comes from.
for h in "$P"/include/p11smime/*.h; do
	perl -0777 -pe 's{/\*.*?\*/}{}gs' "$h" |
		grep -HE --label="$(basename "$h")" 'jansson|json_t|pkcs11|libp11|\bCK_[A-Z_]+'
done >"$TEST_TMP/leaks"
if [ -s "$TEST_TMP/leaks" ]; then
	fail "installed headers use jansson, libp11 or PKCS#11: $(head -5 "$TEST_TMP/leaks")"
else
	pass "no jansson, libp11 or PKCS#11 types in the installed headers"
fi

# Each header on its own, from the installed tree only.
bad=0
for h in "$P"/include/p11smime/*.h; do
	echo "#include <p11smime/$(basename "$h")>" |
		cc -std=c11 -Wall -Wextra -Werror -fsyntax-only $(pkg-config --cflags p11smime) -x c - \
			2>>"$TEST_TMP/headers.err" || bad=$((bad + 1))
done
assert_eq 0 "$bad" "every installed header compiles on its own (C11, -Wall -Wextra)"
[ "$bad" = 0 ] || head -20 "$TEST_TMP/headers.err"

ex=$TEST_TMP/sign_and_validate
# shellcheck disable=SC2046 # pkg-config's words are meant to split
cc -o "$ex" "$P11S_SRCDIR/examples/sign_and_validate.c" $(pkg-config --cflags --libs p11smime) \
	2>"$TEST_TMP/cc.err"
RC=$?
assert_exit 0 "the example builds with pkg-config --cflags --libs p11smime only"
[ "$RC" = 0 ] || head -20 "$TEST_TMP/cc.err"

new_token
T=$TEST_TMP
printf 'From: <rsa2048@example.org>\nTo: <bob@example.org>\nSubject: from the example\n\nSigned by an application.\n' >"$T/mail.txt"
# One certificate the rules accept, one they reject (a server certificate: no emailProtection).
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/server.key" 2>/dev/null
printf '[ext]\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=email:server@example.org\n' >"$T/server.ext"
ca_issue "key:$T/server.key" "$T/server.pem" "$T/server.ext" --email server@example.org --cn server >/dev/null
cat "$CERTS_DIR/rsa2048.pem" "$T/server.pem" >"$T/bundle.pem"
# An ASan build of the library needs its runtime, which the example does not link first.
ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0 LD_LIBRARY_PATH=$libdir \
	"$ex" "$SOFTHSM_MODULE" "file:$PIN_FILE" rsa2048@example.org "$T/mail.txt" "$T/signed.eml" \
	"$T/bundle.pem" "$CA_PEM" >"$T/ex.out" 2>"$T/ex.err"
RC=$?
assert_exit 1 "the example signs, and exits 1 because the bundle holds a rejected certificate"
[ "$RC" = 1 ] || head -20 "$T/ex.err"
assert_matches "$T/ex.out" '^signed .* \(rsassa-pkcs1-v1_5, CKM_RSA_PKCS\)$'
if openssl cms -verify -in "$T/signed.eml" -CAfile "$CA_PEM" -out "$T/content" 2>"$T/verify.err" &&
	grep -q '^Signed by an application' "$T/content"; then
	pass "openssl cms -verify accepts the example's signature"
else
	fail "openssl cms -verify: $(head -c 300 "$T/verify.err")"
fi

# The installed CLI's verdicts, written as the example writes them.
"$P/bin/p11smime" --json validate --ca "$CA_PEM" "$T/bundle.pem" >"$T/cli.json" 2>"$T/cli.err"
RC=$?
assert_exit 1 "the installed CLI runs from the prefix and rejects the server certificate"
jq -r '.certificates[] | "\(.source) #\(.index): \(.verdict)",
	(.checks[] | "  \(.rule): \(.result) (\(.message))"),
	"  chain: \(.chain.result) (\(.chain.message))"' "$T/cli.json" >"$T/cli.txt"
grep -v '^signed ' "$T/ex.out" >"$T/ex.txt"
# The two ran a second or so apart.
sed -i 's/(judged at [^)]*)/(judged at T)/' "$T/cli.txt" "$T/ex.txt"
if [ -s "$T/cli.txt" ] && cmp -s "$T/cli.txt" "$T/ex.txt"; then
	pass "the example's verdicts are the CLI's ($(grep -c '#' "$T/ex.txt") certificates)"
else
	fail "the example's verdicts differ from the CLI's"
	diff "$T/cli.txt" "$T/ex.txt" | head -20
fi
assert_contains "$T/ex.txt" "$T/bundle.pem #0: accepted"
assert_contains "$T/ex.txt" "$T/bundle.pem #1: rejected"
finish
