#!/usr/bin/env bash
# CA certificates on a token, and trust from p11-kit's trust module:
# - a CA certificate needs no private key and is never usable for outgoing
#   mail (validate on SoftHSM and on p11-kit-trust.so itself);
# - --trust/--ca pkcs11: find tokens among every module p11-kit knows, its
#   trust module included (kept out of the proxy), beside the user's card.
# The trust module reads a test-made anchor directory, through a private
# p11-kit user configuration, never the system's CA list.
. "$(dirname "$0")/lib.sh"

new_token
T=$TEST_TMP
unwind_modules # --trust/--ca pkcs11: load every module p11-kit knows
PINOPT=(--pin-source "file:$PIN_FILE")
TRUST_SO=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-trust.so
[ -f "$TRUST_SO" ] || { fail "$TRUST_SO is missing (package p11-kit-modules)"; finish; }

# --------------------------------------------- a CA certificate on SoftHSM
token_import_cert "$CA_PEM" c0 test-ca
run_p11smime --json "${PINOPT[@]}" validate "pkcs11:token=$TOKEN_LABEL;object=test-ca;type=cert"
assert_exit 0 "a CA certificate on the token: accepted"
assert_json "$OUT" '.certificates[0] | .ca == true and .verdict == "accepted" and .usable_for_outgoing == false and .can_sign == false and .can_encrypt == false' \
	"CA certificate: accepted, not usable for outgoing mail"
assert_json "$OUT" '[.certificates[0].key.checks[] | .result] | length == 4 and all(. == "skip")' \
	"CA certificate: every key check skips"
assert_json "$OUT" '.certificates[0].key.checks[0] | .check == "key-present" and (.message | contains("CA certificate"))' \
	"key-present says why it skips"
run_p11smime "${PINOPT[@]}" validate "pkcs11:token=$TOKEN_LABEL;object=test-ca;type=cert"
assert_not_contains "$OUT" "FAIL  key-present"
assert_contains "$OUT" "1 accepted, 0 rejected, 0 usable for outgoing mail"
# A mail certificate beside it still counts.
run_p11smime "${PINOPT[@]}" validate "pkcs11:token=$TOKEN_LABEL;object=test-ca;type=cert" \
	"pkcs11:token=$TOKEN_LABEL;object=rsa2048;type=cert"
assert_contains "$OUT" "2 accepted, 0 rejected, 1 usable for outgoing mail"

# -------------------------------------- p11-kit's trust module as --module
# Whatever anchors the system has: none fails key-present, none is usable.
run_p11smime --json --module "$TRUST_SO" validate
STDOUT='' # some hundred kilobytes of JSON: keep it out of the next commands' environment
assert_exit 0 "validate --module p11-kit-trust.so: every CA accepted"
assert_json "$OUT" '[.certificates[] | select(.ca == true)] | all(.usable_for_outgoing == false)' \
	"no CA of the trust module is usable for outgoing mail"
assert_json "$OUT" '[.certificates[] | select(.ca == true) | .key.checks[]? | select(.result == "fail")] | length == 0' \
	"no key check of a CA fails"

# ------------------------- a private p11-kit configuration: test anchors
# p11-kit reads no user configuration for root: run p11smime as nobody then.
mkdir -p "$T/p11s-anchors" "$T/home/.config/pkcs11/modules"
cp "$CA_PEM" "$T/p11s-anchors/test-ca.pem"
# Same name as the system's file: merged over it, so the trust module
# serves only the test anchors (token label: the directory's name).
printf 'module: p11-kit-trust.so\nx-init-reserved: paths=%s\n' "$T/p11s-anchors" \
	>"$T/home/.config/pkcs11/modules/p11-kit-trust.module"
REAL_P11SMIME=$P11SMIME
as_user() { # p11smime ARGS as nobody (when root), with the private HOME
	if [ "$(id -u)" = 0 ]; then
		P11SMIME=/usr/bin/env run_p11smime HOME="$T/home" \
			setpriv --reuid=65534 --regid=65534 --clear-groups "$REAL_P11SMIME" "$@"
	else
		P11SMIME=/usr/bin/env run_p11smime HOME="$T/home" "$REAL_P11SMIME" "$@"
	fi
}
chmod -R a+rwX "$T"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/alice.key" 2>/dev/null
SAN_EMAIL=alice@example.org ca_issue "key:$T/alice.key" "$T/alice.pem" smime-ec --cn Alice
printf 'Content-Type: text/plain\n\nHello\n' >"$T/entity.txt"
openssl cms -sign -signer "$T/alice.pem" -inkey "$T/alice.key" -in "$T/entity.txt" -out "$T/part.eml"
{ printf 'From: alice@example.org\nTo: bob@example.org\nSubject: s\n'; cat "$T/part.eml"; } >"$T/signed.eml"
chmod a+r "$T"/*.eml "$T"/*.pem

# Without --module: the proxy (which holds the SoftHSM card) has no such
# token; p11-kit's registry has it.
unset P11SMIME_MODULE
as_user verify --trust 'pkcs11:token=p11s-anchors' -i "$T/signed.eml"
assert_exit 0 "verify --trust pkcs11:token=p11s-anchors without --module"
assert_contains "$OUT" "good signature by alice@example.org"
as_user verify --trust 'pkcs11:token=p11s-anchors;type=cert' -i "$T/signed.eml"
assert_exit 0 "the URI's object part is honoured (type=cert)"
as_user verify --trust 'pkcs11:token=p11s-anchors;object=no-such-label' -i "$T/signed.eml"
assert_exit 3 "a label no anchor has: nothing to trust"
as_user verify --trust 'pkcs11:token=no-such-token' -i "$T/signed.eml"
assert_exit 3 "no token of that name anywhere"
assert_contains "$ERR" "every module p11-kit knows"

# Beside the user's card in one process: the card's certificates through
# the proxy, the anchors through the registry.
as_user verify --trust "pkcs11:token=$TOKEN_LABEL;object=rsa2048;type=cert" \
	--trust 'pkcs11:token=p11s-anchors' -i "$T/signed.eml"
assert_exit 0 "a card token and the trust module's token in one process"

# The card as --module (loaded directly), the anchors from p11-kit's
# trust module: validate's chain check uses them.
# (The CA put on the token above goes, so that the anchors come from p11-kit only.)
token_delete cert c0
chmod -R a+rwX "$TOKEN_DIR"
export P11SMIME_MODULE=$SOFTHSM_MODULE
as_user --json "${PINOPT[@]}" validate "pkcs11:token=$TOKEN_LABEL;object=rsa2048;type=cert"
assert_json "$OUT" '.certificates[0].chain.result == "skip"' "control: no anchors, no chain"
as_user --json "${PINOPT[@]}" validate --ca 'pkcs11:token=p11s-anchors' \
	"pkcs11:token=$TOKEN_LABEL;object=rsa2048;type=cert"
assert_exit 0 "validate --ca pkcs11:token=p11s-anchors beside the SoftHSM card"
assert_json "$OUT" '.certificates[0].chain.result == "pass" and .certificates[0].usable_for_outgoing == true' \
	"the chain builds to the trust module's anchor"
assert_json "$OUT" '.certificates[0].key.checks[0].result == "pass"' "the card's key is still checked"

finish
