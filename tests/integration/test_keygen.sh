#!/usr/bin/env bash
# p11smime keygen and delete: key pairs generated on the token with the
# attributes issue 15 names (checked with pkcs11-tool and list --json), ids
# and labels never reused, the token named unambiguously, the mechanism
# checked first; delete lists without --yes and needs --all for several ids.
. "$(dirname "$0")/lib.sh"

new_token
P=(--pin-source "file:$PIN_FILE")

# The pkcs11-tool block of the TYPE (privkey, pubkey, cert) object labelled LABEL.
tool_block() { # TYPE LABEL
	pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --login --pin "$PIN" \
		--list-objects --type "$1" 2>/dev/null | awk -v l="$2" '
			/^[A-Z][a-z]+ (Key )?Object;/ { if (b != "" && hit) print b; b = $0 "\n"; hit = 0; next }
			{ b = b $0 "\n" }
			$1 == "label:" && $2 == l { hit = 1 }
			END { if (b != "" && hit) print b }'
}

object_count() {
	pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --login --pin "$PIN" \
		--list-objects 2>/dev/null | grep -cE '^[A-Z][a-z]+ (Key )?Object;'
}

# ------------------------------------------------ the command-line shape

run_p11smime --help
for c in keygen csr import delete; do
	assert_contains "$OUT" "  $c " "the global help names '$c'"
done
for c in keygen csr import delete; do
	run_p11smime "$c" --help
	assert_exit 0 "$c --help"
	assert_matches "$OUT" "^Usage: p11smime .*$c" "$c --help starts with its usage"
	run_p11smime "$c" --no-such-option
	assert_exit 2 "$c with an unknown option is a usage error"
	assert_eq "" "$STDOUT" "$c: a usage error prints nothing on standard output"
	[ -f "$P11S_SRCDIR/docs/man/p11smime-$c.1" ] && pass "$c has a man page" || fail "no man page for $c"
done

# ------------------------------------------------------- every key type

id=5
for type in rsa:2048 rsa:3072 rsa:4096 ec:P-256 ec:P-384 ec:P-521; do
	label="k-${type/:/-}"
	hex=$(printf '%02x' $id)
	run_p11smime "${P[@]}" --json keygen --token "$TOKEN_LABEL" --type "$type" --label "$label"
	assert_exit 0 "keygen $type"
	cp "$OUT" "$TEST_TMP/keygen-$id.json"
	assert_json "$OUT" ".id == \"$hex\" and .label == \"$label\" and .type == \"$type\"" "$type: the first free id ($hex) and the label"
	assert_json "$OUT" '.private_key | test("type=private") and test("object='"$label"'")' "$type: private key URI"
	assert_json "$OUT" '.public_key | test("type=public") and test("id=%'"$hex"';"; "i")' "$type: public key URI"
	priv=$(tool_block privkey "$label")
	pub=$(tool_block pubkey "$label")
	grep -q "ID: *$hex" <<<"$priv" && pass "$type: pkcs11-tool sees the private key, id $hex" ||
		fail "$type: no private key $label with id $hex: $priv"
	grep -q "ID: *$hex" <<<"$pub" && pass "$type: pkcs11-tool sees the public key beside it" ||
		fail "$type: no public key $label with id $hex: $pub"
	grep -qE 'Access:.*sensitive.*never extractable.*local' <<<"$priv" &&
		pass "$type: sensitive, never extractable, local" || fail "$type: access flags: $priv"
	case "$type" in
	rsa:*)
		grep -qE 'Usage: *decrypt, sign, unwrap$' <<<"$priv" && pass "$type: usage decrypt, sign, unwrap" ||
			fail "$type: usage: $priv"
		grep -q "RSA ${type#rsa:} bits" <<<"$pub" && pass "$type: ${type#rsa:} bits" || fail "$type: size: $pub"
		;;
	ec:*)
		grep -qE 'Usage: *sign, derive$' <<<"$priv" && pass "$type: usage sign, derive (no decrypt)" ||
			fail "$type: usage: $priv"
		;;
	esac
	run_p11smime "${P[@]}" --json list --login "pkcs11:token=$TOKEN_LABEL;id=%$hex"
	assert_exit 0 "$type: list --json"
	assert_json "$OUT" '[.objects[] | select(.class == "private-key")] | length == 1 and
		(.[0] | .sensitive and (.extractable | not) and .private and .local and .never_extractable and .sign)' \
		"$type: list --json: private, sensitive, not extractable, local, sign"
	case "$type" in
	rsa:*)
		assert_json "$OUT" '.objects[] | select(.class == "private-key") | .key_type == "RSA" and .key_bits == '"${type#rsa:}"' and .decrypt and .unwrap and (.derive | not)' \
			"$type: list --json: RSA ${type#rsa:}, decrypt and unwrap"
		;;
	ec:*)
		assert_json "$OUT" '.objects[] | select(.class == "private-key") | .key_type == "EC" and .curve == "'"${type#ec:}"'" and .derive and (.decrypt | not)' \
			"$type: list --json: EC ${type#ec:}, derive"
		;;
	esac
	assert_json "$OUT" '[.objects[] | select(.class == "public-key" and .label == "'"$label"'")] | length == 1' \
		"$type: list --json: the public key has the same id and label"
	id=$((id + 1))
done

# ------------------------------------------------------------ refusals

before=$(object_count)
run_p11smime "${P[@]}" keygen --token "$TOKEN_LABEL" --type ec:P-256 --label fresh --id 01
assert_exit 2 "an id in use is refused"
assert_contains "$ERR" "already holds an object with id 01"
run_p11smime "${P[@]}" keygen --token "$TOKEN_LABEL" --type ec:P-256 --label rsa2048
assert_exit 2 "a label in use is refused"
assert_contains "$ERR" "already holds an object labelled 'rsa2048'"
assert_eq "$before" "$(object_count)" "nothing was written by the refusals"

run_p11smime "${P[@]}" keygen --token "$TOKEN_LABEL" --type ec:P-256 --label chosen --id 0a:1B
assert_exit 0 "--id 0a:1B"
assert_contains "$OUT" "id 0a1b"
assert_contains "$OUT" "id=%0A%1B;object=chosen;type=private"

# The PIN from the token URI's pin-source, as every command takes it; none: exit 3.
run_p11smime keygen --token "pkcs11:token=$TOKEN_LABEL?pin-source=file:$PIN_FILE" --type ec:P-256 --label uripin
assert_exit 0 "keygen: the PIN from the URI's pin-source"
run_p11smime keygen --token "$TOKEN_LABEL" --type ec:P-256 --label nopin
assert_exit 3 "keygen: no PIN and no terminal"
assert_contains "$ERR" "--pin-source"

for bad in rsa:1024 ec:P-192 dsa:2048; do
	run_p11smime "${P[@]}" keygen --token "$TOKEN_LABEL" --type "$bad" --label x
	assert_exit 2 "type $bad refused"
	assert_contains "$ERR" "is not one of rsa:2048"
done
run_p11smime "${P[@]}" keygen --token "$TOKEN_LABEL" --type rsa:2048
assert_exit 2 "--label is required"
run_p11smime "${P[@]}" keygen --type rsa:2048 --label x
assert_exit 2 "--token is required"
run_p11smime "${P[@]}" keygen --token nosuchtoken --type rsa:2048 --label x
assert_exit 3 "an unknown token label"
assert_contains "$ERR" "no token matches"

# A wrong PIN: one attempt, exit 3, nothing generated.
echo 999999 >"$TEST_TMP/wrong-pin"
before=$(object_count)
run_p11smime --pin-source "file:$TEST_TMP/wrong-pin" keygen --token "$TOKEN_LABEL" --type ec:P-256 --label wrongpin
assert_exit 3 "a wrong PIN"
assert_contains "$ERR" "did not accept the PIN"
assert_eq "$before" "$(object_count)" "nothing generated after a wrong PIN"

# The mechanism is checked first, and what is missing is said.
cp "$SOFTHSM2_CONF" "$TEST_TMP/conf.bak"
# (SoftHSM 2.6 skips the first entry of a "-" list, hence the repeat.)
echo "slots.mechanisms = -CKM_EC_KEY_PAIR_GEN,CKM_EC_KEY_PAIR_GEN" >>"$SOFTHSM2_CONF"
run_p11smime "${P[@]}" keygen --token "$TOKEN_LABEL" --type ec:P-384 --label nomech
assert_exit 3 "no CKM_EC_KEY_PAIR_GEN"
assert_contains "$ERR" "has no CKM_EC_KEY_PAIR_GEN: it cannot generate EC keys"
cp "$TEST_TMP/conf.bak" "$SOFTHSM2_CONF"

# ------------------------------------------------------ two tokens: ambiguous

softhsm2-util --init-token --free --label second --pin "$PIN" --so-pin "$SO_PIN" >/dev/null
run_p11smime "${P[@]}" keygen --token "pkcs11:model=SoftHSM%20v2" --type ec:P-256 --label amb
assert_exit 3 "a URI naming two tokens is refused"
assert_contains "$ERR" "matches 2 tokens"
assert_matches "$ERR" '^  pkcs11:.*token=p11smime-test'
assert_matches "$ERR" '^  pkcs11:.*token=second'
run_p11smime "${P[@]}" delete --yes "pkcs11:id=%01"
assert_exit 3 "delete: a URI without a token, two tokens: refused"
assert_contains "$ERR" "matches 2 tokens"
run_p11smime "${P[@]}" --json keygen --token second --type ec:P-256 --label on-second
assert_exit 0 "keygen on the second token, by label"
assert_json "$OUT" '.id == "01" and (.token | test("token=second"))' "an empty token: id 01"

# ----------------------------------------------------------------- delete

run_p11smime "${P[@]}" delete "pkcs11:token=$TOKEN_LABEL;id=%01"
assert_exit 1 "delete without --yes"
assert_contains "$OUT" "Would delete"
assert_matches "$OUT" 'certificate +pkcs11:.*id=%01;object=rsa2048;type=cert'
assert_matches "$OUT" 'private key +pkcs11:.*id=%01;object=rsa2048;type=private'
assert_matches "$OUT" 'public key +pkcs11:.*id=%01;object=rsa2048;type=public'
assert_contains "$ERR" "nothing deleted without --yes"
[ -n "$(tool_block cert rsa2048)" ] && pass "the certificate is still there" || fail "deleted without --yes"

# A certificate URI without type=: the pair goes with it.
run_p11smime "${P[@]}" --json delete --yes "pkcs11:token=$TOKEN_LABEL;id=%01;object=rsa2048"
assert_exit 0 "delete --yes"
assert_json "$OUT" '.deleted and (.objects | length == 3) and ([.objects[].class] | sort == ["certificate","private-key","public-key"])' "the certificate, private and public key"
[ -z "$(tool_block cert rsa2048)$(tool_block privkey rsa2048)$(tool_block pubkey rsa2048)" ] &&
	pass "pkcs11-tool: all three gone" || fail "objects of id 01 remain"

# type=cert: the certificate only.
run_p11smime "${P[@]}" delete --yes "pkcs11:token=$TOKEN_LABEL;object=rsa3072;type=cert"
assert_exit 0 "delete the certificate only"
[ -z "$(tool_block cert rsa3072)" ] && [ -n "$(tool_block privkey rsa3072)" ] &&
	pass "certificate gone, key kept" || fail "type=cert deleted the wrong objects"

# Several ids: --all.
run_p11smime "${P[@]}" delete --yes "pkcs11:token=$TOKEN_LABEL;type=cert"
assert_exit 3 "several ids without --all"
assert_contains "$ERR" "different ids"
assert_matches "$ERR" '^  pkcs11:.*id=%02;object=p256;type=cert|^  pkcs11:.*id=%03;object=p256;type=cert'
[ -n "$(tool_block cert p256)" ] && pass "nothing deleted without --all" || fail "deleted without --all"
run_p11smime "${P[@]}" delete --yes --all "pkcs11:token=$TOKEN_LABEL;type=cert"
assert_exit 0 "delete --yes --all"
[ -z "$(tool_block cert p256)$(tool_block cert p384)" ] && pass "every certificate gone" || fail "certificates remain"

run_p11smime "${P[@]}" delete --yes "pkcs11:token=$TOKEN_LABEL;object=nothing"
assert_exit 3 "no match"
assert_contains "$ERR" "no object matches"
run_p11smime "${P[@]}" delete --yes "pkcs11:token=$TOKEN_LABEL"
assert_exit 2 "a URI naming no object"
assert_contains "$ERR" "names no object"

finish
