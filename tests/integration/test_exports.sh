#!/usr/bin/env bash
# libp11smime.so exports exactly the functions the installed headers declare:
# nothing private leaks (a p11s_ helper of src/ or pkcs11/), nothing declared
# is missing.  Compares `nm -D --defined-only` with tools/public-symbols.sh.
. "$(dirname "$0")/lib.sh"

so=${P11S_BUILDDIR:?}/libp11smime.so
if [ ! -e "$so" ]; then
	pass "static build (P11S_SHARED=OFF): no shared library to check"
	finish
fi

bash "$P11S_SRCDIR/tools/public-symbols.sh" "$P11S_SRCDIR"/include/p11smime/*.h >"$TEST_TMP/declared"
# Absolute symbols are the version nodes (P11SMIME_0), not functions.
nm -D --defined-only "$so" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' |
	LC_ALL=C sort -u >"$TEST_TMP/exported"

if [ "$(wc -l <"$TEST_TMP/declared")" -lt 100 ]; then
	fail "only $(wc -l <"$TEST_TMP/declared") functions found in include/p11smime/*.h: the scan is broken"
fi
extra=$(LC_ALL=C comm -13 "$TEST_TMP/declared" "$TEST_TMP/exported")
missing=$(LC_ALL=C comm -23 "$TEST_TMP/declared" "$TEST_TMP/exported")
if [ -z "$extra" ]; then
	pass "nothing exported that no public header declares"
else
	fail "exported but not declared in include/p11smime/: $(echo $extra)"
fi
if [ -z "$missing" ]; then
	pass "every declared function is exported ($(wc -l <"$TEST_TMP/declared"))"
else
	fail "declared in include/p11smime/ but not exported: $(echo $missing)"
fi

readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p' >"$TEST_TMP/soname"
assert_matches "$TEST_TMP/soname" '^libp11smime\.so\.[0-9]+$'
finish
