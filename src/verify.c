#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/buffer.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "outcore.h"
#include "mailbox.h"
#include "p11smime/certs.h"
#include "mime.h"
#include "p11smime/io.h"
#include "p11smime/verify.h"

struct signer {
	p11s_sig_verdict verdict;
	char *reason;
	X509 *cert;
	char *subject, *issuer, *serial, *digest, *sigalg;
	char **emails; /* the subjectAltName mailboxes */
	size_t n_emails;
	int sender_place; /* where a From address matched: P11I_MAILBOX_IN_*, or 0 */
	int has_time;
	time_t signing_time;
	time_t checked_at; /* the time the chain was judged at */
	int valid_at_signing, valid_at;
	char **chain;
	size_t n_chain;
	p11s_verdict *rules;
};

struct p11s_verify_report {
	p11s_rc rc;
	char *summary;
	const char *format;
	time_t at;
	char **from;
	size_t n_from;
	char *from_error; /* why the From header could not be read, or NULL */
	int sender_ok;
	struct signer *signers;
	size_t n_signers;
};

/* ------------------------------------------------------------ certificates */

static int valid_at(X509 *x, time_t t)
{
	return X509_cmp_time(X509_get0_notBefore(x), &t) < 0 &&
	       X509_cmp_time(X509_get0_notAfter(x), &t) > 0;
}

static time_t asn1_time(const ASN1_TIME *a)
{
	struct tm tm;

	return ASN1_TIME_to_tm(a, &tm) ? timegm(&tm) : 0;
}

/* ------------------------------------------------------------------ verify */

static void signer_clear(struct signer *s)
{
	free(s->reason);
	X509_free(s->cert);
	free(s->subject);
	free(s->issuer);
	free(s->serial);
	free(s->digest);
	free(s->sigalg);
	p11s_strv_free(s->emails);
	p11s_strv_free(s->chain);
	p11s_verdict_free(s->rules);
}

void p11s_verify_report_free(p11s_verify_report *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->n_signers; i++)
		signer_clear(&r->signers[i]);
	free(r->signers);
	p11s_strv_free(r->from);
	free(r->from_error);
	free(r->summary);
	free(r);
}

const char *p11s_sig_verdict_name(p11s_sig_verdict v)
{
	switch (v) {
	case P11S_SIG_GOOD:
		return "good";
	case P11S_SIG_BAD_SIGNATURE:
		return "bad-signature";
	case P11S_SIG_UNTRUSTED:
		return "untrusted";
	case P11S_SIG_NO_CERTIFICATE:
		return "no-certificate";
	case P11S_SIG_UNSUPPORTED:
		return "unsupported";
	}
	return "unknown";
}

static const char *sigalg_name(const X509_ALGOR *alg)
{
	int nid = OBJ_obj2nid(alg->algorithm);

	switch (nid) {
	case NID_rsaEncryption:
	case NID_sha1WithRSAEncryption:
	case NID_sha224WithRSAEncryption:
	case NID_sha256WithRSAEncryption:
	case NID_sha384WithRSAEncryption:
	case NID_sha512WithRSAEncryption:
	case NID_md5WithRSAEncryption:
		return "RSA PKCS#1 v1.5";
	case NID_rsassaPss:
		return "RSA-PSS";
	case NID_X9_62_id_ecPublicKey:
	case NID_ecdsa_with_SHA1:
	case NID_ecdsa_with_SHA224:
	case NID_ecdsa_with_SHA256:
	case NID_ecdsa_with_SHA384:
	case NID_ecdsa_with_SHA512:
		return "ECDSA";
	case NID_ED25519:
		return "Ed25519";
	case NID_ED448:
		return "Ed448";
	case NID_undef:
		return "unknown";
	}
	return OBJ_nid2ln(nid);
}

static int signing_time(CMS_SignerInfo *si, time_t *out)
{
	int idx = CMS_signed_get_attr_by_NID(si, NID_pkcs9_signingTime, -1);
	X509_ATTRIBUTE *a;
	ASN1_TYPE *t;
	struct tm tm;

	if (idx < 0)
		return 0;
	a = CMS_signed_get_attr(si, idx);
	t = a ? X509_ATTRIBUTE_get0_type(a, 0) : NULL;
	if (t == NULL || (t->type != V_ASN1_UTCTIME && t->type != V_ASN1_GENERALIZEDTIME))
		return 0;
	if (!ASN1_TIME_to_tm(t->value.utctime, &tm))
		return 0;
	*out = timegm(&tm);
	return 1;
}

static char *sid_text(CMS_SignerInfo *si)
{
	ASN1_OCTET_STRING *keyid = NULL;
	X509_NAME *issuer = NULL;
	ASN1_INTEGER *sno = NULL;
	char *s = NULL, *a, *b;

	if (!CMS_SignerInfo_get0_signer_id(si, &keyid, &issuer, &sno))
		return p11i_strdup("an unknown signer");
	if (keyid != NULL) {
		a = p11i_hex(ASN1_STRING_get0_data(keyid), (size_t)ASN1_STRING_length(keyid));
		s = p11i_asprintf("subject key identifier %s", a ? a : "?");
		free(a);
		return s;
	}
	a = p11s_cert_name_string(issuer);
	b = p11i_serial_hex(sno);
	s = p11i_asprintf("issuer %s, serial %s", a ? a : "?", b ? b : "?");
	free(a);
	free(b);
	return s;
}

/* Judge the chain of @p s->cert at s->checked_at; sets verdict/reason when it fails. */
static p11s_rc check_chain(struct signer *s, X509_STORE *store, STACK_OF(X509) * trust,
                           STACK_OF(X509) * untrusted)
{
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_VERIFY_PARAM *param;
	STACK_OF(X509) * chain;
	int ok, e, depth;
	char when[32];

	if (ctx == NULL || !X509_STORE_CTX_init(ctx, store, s->cert, untrusted)) {
		X509_STORE_CTX_free(ctx);
		return P11S_E_NOMEM;
	}
	/*
	 * A trusted stack rather than X509_STORE_add_cert() per anchor: OpenSSL
	 * 3.0 re-sorts the store on every insert (20 s for 10,000 anchors).
	 */
	if (trust != NULL)
		X509_STORE_CTX_set0_trusted_stack(ctx, trust);
	/* The S/MIME signing purpose: KU and EKU of the signer, CA flags above. */
	X509_STORE_CTX_set_default(ctx, "smime_sign");
	param = X509_STORE_CTX_get0_param(ctx);
	/* An end-entity the user trusts is an anchor of its own. */
	X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
	X509_VERIFY_PARAM_set_time(param, s->checked_at);
	ok = X509_verify_cert(ctx);
	chain = X509_STORE_CTX_get0_chain(ctx);
	if (chain != NULL && sk_X509_num(chain) > 0) {
		int n = sk_X509_num(chain);

		/* NULL-terminated, as p11s_strv_free() expects. */
		s->chain = calloc((size_t)n + 1, sizeof(*s->chain));
		if (s->chain == NULL) {
			X509_STORE_CTX_free(ctx);
			return P11S_E_NOMEM;
		}
		for (int i = 0; i < n; i++) {
			s->chain[i] =
			    p11s_cert_name_string(X509_get_subject_name(sk_X509_value(chain, i)));
			if (s->chain[i] == NULL) {
				s->n_chain = (size_t)i;
				X509_STORE_CTX_free(ctx);
				return P11S_E_NOMEM;
			}
		}
		s->n_chain = (size_t)n;
	}
	if (ok <= 0) {
		e = X509_STORE_CTX_get_error(ctx);
		depth = X509_STORE_CTX_get_error_depth(ctx);
		p11s_time_format(s->checked_at, when, sizeof(when));
		s->verdict = P11S_SIG_UNTRUSTED;
		if (e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
		    e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
		    e == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
		    e == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN)
			s->reason =
			    p11i_asprintf("no chain to a certificate given with --trust (%s)",
			                  X509_verify_cert_error_string(e));
		else
			s->reason = p11i_asprintf("the chain does not hold at %s: %s (at depth %d)",
			                          when, X509_verify_cert_error_string(e), depth);
		if (s->reason == NULL) {
			X509_STORE_CTX_free(ctx);
			return P11S_E_NOMEM;
		}
	}
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	return P11S_OK;
}

static p11s_rc fill_signer(struct signer *s, CMS_SignerInfo *si, BIO *digests, X509_STORE *store,
                           STACK_OF(X509) * untrusted, const p11s_verify_opts *opts, time_t at,
                           p11s_error *err)
{
	EVP_PKEY *pk = NULL;
	X509 *x = NULL;
	X509_ALGOR *dig = NULL, *sig = NULL;
	p11s_validate_opts vopts = {0};
	p11s_rc rc;
	char *who;
	int has_attrs, v;

	CMS_SignerInfo_get0_algs(si, &pk, &x, &dig, &sig);
	if (dig != NULL)
		s->digest = p11i_strdup(OBJ_nid2sn(OBJ_obj2nid(dig->algorithm)));
	if (sig != NULL)
		s->sigalg = p11i_strdup(sigalg_name(sig));
	s->has_time = signing_time(si, &s->signing_time);
	s->checked_at = s->has_time ? s->signing_time : at;
	s->valid_at_signing = -1;
	s->valid_at = -1;
	if (x == NULL) {
		s->verdict = P11S_SIG_NO_CERTIFICATE;
		who = sid_text(si);
		s->reason = p11i_asprintf("the signer's certificate (%s) is neither in the message "
		                          "nor among the --trust certificates",
		                          who ? who : "?");
		free(who);
		return s->reason ? P11S_OK : p11i_err_nomem(err);
	}
	X509_up_ref(x);
	s->cert = x;
	s->subject = p11s_cert_name_string(X509_get_subject_name(x));
	s->issuer = p11s_cert_name_string(X509_get_issuer_name(x));
	s->serial = p11i_serial_hex(X509_get0_serialNumber(x));
	if (s->subject == NULL || s->issuer == NULL || s->serial == NULL ||
	    (s->emails = p11i_cert_mailboxes(x, P11I_MAILBOX_IN_SAN, &s->n_emails)) == NULL)
		return p11i_err_nomem(err);
	s->valid_at_signing = valid_at(x, s->checked_at);
	s->valid_at = valid_at(x, at);

	vopts.at = at;
	vopts.warn_days = 30;
	vopts.anchors = opts->trust;
	vopts.untrusted = untrusted;
	rc = p11s_validate(x, NULL, &vopts, &s->rules, err);
	if (rc != P11S_OK)
		return rc;

	/*
	 * Signed attributes first (they carry the content digest), then the
	 * digest.  OpenSSL says -1 when it cannot check at all (an algorithm it
	 * lacks), 0 when the check fails: only the latter is a bad signature.
	 */
	has_attrs = CMS_signed_get_attr_count(si) >= 0;
	v = has_attrs ? CMS_SignerInfo_verify(si) : 1;
	if (v == 0) {
		s->verdict = P11S_SIG_BAD_SIGNATURE;
		s->reason = p11i_strdup("the signature over the signed attributes does not verify "
		                        "with the certificate's key");
	} else if (v > 0 && (v = CMS_SignerInfo_verify_content(si, digests)) == 0) {
		s->verdict = P11S_SIG_BAD_SIGNATURE;
		s->reason =
		    p11i_strdup(has_attrs ? "the content was altered: its digest differs "
		                            "from the signed one"
		                          : "the signature over the content does not verify");
	}
	if (v < 0 && X509_get0_pubkey(x) == NULL) {
		/* Not an algorithm OpenSSL lacks: a key that does not decode. */
		s->verdict = P11S_SIG_UNSUPPORTED;
		s->reason = p11i_strdup("the signer's certificate holds a public key that does not "
		                        "decode (a damaged certificate?): the signature cannot be "
		                        "checked");
	} else if (v < 0) {
		unsigned long e = ERR_peek_last_error();

		s->verdict = P11S_SIG_UNSUPPORTED;
		s->reason = p11i_asprintf("OpenSSL %s cannot check this signature (%s with %s): %s",
		                          OpenSSL_version(OPENSSL_VERSION_STRING),
		                          s->sigalg ? s->sigalg : "?", s->digest ? s->digest : "?",
		                          e ? ERR_reason_error_string(e) : "no reason given");
	}
	ERR_clear_error();
	if (s->verdict != P11S_SIG_GOOD) {
		/* Still show the chain: it tells who claims to have signed. */
		struct signer tmp = *s;

		tmp.reason = NULL;
		rc = check_chain(&tmp, store, opts->trust, untrusted);
		free(tmp.reason);
		s->chain = tmp.chain;
		s->n_chain = tmp.n_chain;
		if (s->reason == NULL || rc != P11S_OK)
			return p11i_err_nomem(err);
		return P11S_OK;
	}
	if (check_chain(s, store, opts->trust, untrusted) != P11S_OK)
		return p11i_err_nomem(err);
	return P11S_OK;
}

/*
 * Which signer certificates hold From address @p addr.  RFC 8550 3 has
 * receiving agents recognise it in the subjectAltName and in the subject's
 * PKCS #9 emailAddress; each signer remembers the better place it matched.
 */
static int sender_found(p11s_verify_report *r, const char *addr)
{
	int found = 0;

	for (size_t i = 0; i < r->n_signers; i++) {
		struct signer *s = &r->signers[i];
		int place =
		    s->cert ? p11i_cert_has_mailbox(s->cert, addr,
		                                    P11I_MAILBOX_IN_SAN | P11I_MAILBOX_IN_SUBJECT)
		            : 0;

		if (place != 0 && (s->sender_place == 0 || place < s->sender_place))
			s->sender_place = place;
		found |= place != 0;
	}
	return found;
}

static p11s_rc judge(p11s_verify_report *r)
{
	int bad = 0, untrusted = 0, unsupported = 0;
	char when[32];

	for (size_t i = 0; i < r->n_signers; i++) {
		if (r->signers[i].verdict == P11S_SIG_BAD_SIGNATURE)
			bad++;
		else if (r->signers[i].verdict == P11S_SIG_UNSUPPORTED)
			unsupported++;
		else if (r->signers[i].verdict != P11S_SIG_GOOD)
			untrusted++;
	}
	r->sender_ok = r->from_error ? 0 : -1;
	if (r->n_from > 0) {
		r->sender_ok = 1;
		for (size_t f = 0; f < r->n_from; f++)
			if (!sender_found(r, r->from[f]))
				r->sender_ok = 0;
	}
	if (bad > 0) {
		r->rc = P11S_E_BAD_SIGNATURE;
		r->summary = p11i_asprintf("BAD SIGNATURE: %s",
		                           r->signers[0].verdict == P11S_SIG_BAD_SIGNATURE
		                               ? r->signers[0].reason
		                               : "a signature does not verify");
	} else if (untrusted > 0) {
		r->rc = P11S_E_UNTRUSTED;
		for (size_t i = 0; i < r->n_signers; i++)
			if (r->signers[i].verdict == P11S_SIG_UNTRUSTED ||
			    r->signers[i].verdict == P11S_SIG_NO_CERTIFICATE) {
				r->summary = p11i_asprintf("NOT TRUSTED: %s", r->signers[i].reason);
				break;
			}
	} else if (unsupported > 0) {
		r->rc = P11S_E_CRYPTO;
		for (size_t i = 0; i < r->n_signers; i++)
			if (r->signers[i].verdict == P11S_SIG_UNSUPPORTED) {
				r->summary =
				    p11i_asprintf("CANNOT VERIFY: %s", r->signers[i].reason);
				break;
			}
	} else if (r->sender_ok == 0 && r->from_error != NULL) {
		r->rc = P11S_E_SENDER_MISMATCH;
		r->summary =
		    p11i_asprintf("NOT CONFIRMED AS SIGNED BY ITS SENDER: the signature is "
		                  "good, but the From header cannot be read (%s)",
		                  r->from_error);
	} else if (r->sender_ok == 0) {
		r->rc = P11S_E_SENDER_MISMATCH;
		r->summary = p11i_asprintf(
		    "NOT SIGNED BY ITS SENDER: the signature is good, but the From address %s is "
		    "not among the signer's certificate addresses (subjectAltName or subject "
		    "emailAddress)",
		    r->from[0]);
	} else {
		struct signer *s = &r->signers[0];

		r->rc = P11S_OK;
		if (s->valid_at == 0)
			r->summary = p11i_asprintf(
			    "good signature by %s; the certificate was valid when it signed (%s) "
			    "but is not valid at %s",
			    s->n_emails                                  ? s->emails[0]
			    : s->sender_place == P11I_MAILBOX_IN_SUBJECT ? r->from[0]
			                                                 : s->subject,
			    p11s_time_format(s->checked_at, when, sizeof(when)),
			    s->has_time ? "the time of checking" : "that time");
		else
			r->summary = p11i_asprintf("good signature by %s",
			                           s->n_emails ? s->emails[0]
			                           : s->sender_place == P11I_MAILBOX_IN_SUBJECT
			                               ? r->from[0]
			                               : s->subject);
	}
	return r->summary ? P11S_OK : P11S_E_NOMEM;
}

/*
 * The most of a message verify takes (spooled to a temporary file, not
 * held).  Above what sign makes of the largest mail it is measured with
 * (1 GiB: a few KiB more detached, a third more opaque), which a limit of
 * 1 GiB refused; it bounds the temporary files (twice this) that a
 * hostile message can take.
 */
#define VERIFY_MAX (4ull * 1024 * 1024 * 1024)
/*
 * The most of a message that is not multipart/signed: OpenSSL's reader
 * holds an opaque message, and its content, in memory (about three times
 * the message), so the limit there stays what it was before the one above
 * was raised.
 */
#define HELD_MAX (1024ull * 1024 * 1024)
/* The signature part of multipart/signed is held: signatures and certificates, not content. */
#define SIG_PART_MAX (16u * 1024 * 1024)
/* OpenSSL's MIME reader's line length (MAX_SMLEN): lines are cut where it cuts them. */
#define SMLEN 1024

/* The refusal of a message over @p max bytes (VERIFY_MAX, HELD_MAX). */
static p11s_rc too_large(p11s_error *err, unsigned long long max, const char *how)
{
	return p11i_err(err, P11S_E_INPUT, "the message is too large to verify%s (over %llu MiB)",
	                how, max >> 20);
}

/* A spool is flushed and handed to p11i_stream_wrote() this often. */
#define STREAM_STEP (8u * 1024 * 1024)

/* The spool @p f's descriptor, or -1. */
static int spool_fd(BIO *f)
{
	FILE *fp = p11i_bio_fp(f);

	return fp != NULL ? fileno(fp) : -1;
}

/*
 * @p total bytes are written to the spool @p f: each step, flushed and
 * given to the disk (p11i_stream_wrote()).  0, or -1 with errno.
 */
static int spool_wrote(BIO *f, struct p11i_stream *s, unsigned long long total,
                       unsigned long long *mark)
{
	int fd;

	if (total < *mark)
		return 0;
	*mark = total + STREAM_STEP;
	if (BIO_flush(f) != 1)
		return -1;
	fd = spool_fd(f);
	return fd >= 0 ? p11i_stream_wrote(fd, s, (off_t)total) : 0;
}

/*
 * Copy all of @p in to a temporary file: the header block is needed before
 * the rest is parsed, and holding the message would take its size in
 * memory (three times, with OpenSSL's copies).  A regular file is measured
 * before, by p11s_verify(); here the copy stops at VERIFY_MAX.
 */
static p11s_rc spool(BIO *in, BIO **out, unsigned long long *size, p11s_error *err)
{
	BIO *f;
	char buf[65536];
	unsigned long long total = 0, mark = STREAM_STEP;
	struct p11i_stream ws = {0};
	int n;

	*out = NULL;
	f = p11i_spool_new(err);
	if (f == NULL)
		return p11s_error_rc(err);
	while ((n = BIO_read(in, buf, sizeof(buf))) > 0) {
		total += (size_t)n;
		if (total > VERIFY_MAX) {
			BIO_free(f);
			return too_large(err, VERIFY_MAX, "");
		}
		if (BIO_write(f, buf, n) != n || spool_wrote(f, &ws, total, &mark) != 0) {
			BIO_free(f);
			return p11i_err(err, P11S_E_IO, "cannot write a temporary file: %s",
			                strerror(errno));
		}
	}
	if (n < 0 && BIO_should_retry(in) == 0 && !BIO_eof(in) && total == 0) {
		BIO_free(f);
		return p11i_err_ossl(err, P11S_E_IO, "cannot read the message");
	}
	if (BIO_flush(f) != 1 || BIO_seek(f, 0) != 0) {
		BIO_free(f);
		return p11i_err(err, P11S_E_IO, "cannot write a temporary file: %s",
		                strerror(errno));
	}
	if (total == 0) {
		BIO_free(f);
		return p11i_err(err, P11S_E_INPUT, "the input is empty");
	}
	*out = f;
	*size = total;
	return P11S_OK;
}

/* As OpenSSL's mime_bound_check: 1 a boundary line, 2 the closing one, 0 neither. */
static int bound_check(const char *line, size_t len, const char *bound, size_t blen)
{
	if (blen + 2 > len || strncmp(line, "--", 2) != 0 || strncmp(line + 2, bound, blen) != 0)
		return 0;
	return strncmp(line + 2 + blen, "--", 2) == 0 ? 2 : 1;
}

/* As OpenSSL's strip_eol (not binary): drop trailing CRs and LFs; 1 if there was an LF. */
static int strip_eol(const char *line, size_t *len)
{
	int eol = 0;

	for (; *len > 0; (*len)--) {
		char c = line[*len - 1];

		if (c == '\n')
			eol = 1;
		else if (c != '\r')
			break;
	}
	return eol;
}

/* split_signed()'s blocks, read and written. */
#define SPLIT_BLOCK (64u * 1024)

/*
 * split_signed()'s reader: the body in blocks, cut into lines where
 * BIO_gets() through a buffer BIO cuts them, as OpenSSL's reader reads: at
 * most SMLEN - 1 bytes, through the first LF.  A read error ends the body,
 * as it ended the BIO_gets() loop.  (That loop, and a write through stdio
 * per line, were 40 % of a large message's CPU time.)
 */
struct line_reader {
	BIO *in;
	size_t off, len;
	int end;
	unsigned char buf[SPLIT_BLOCK];
};

/*
 * The next line, copied to @p line and NUL-terminated as BIO_gets() leaves
 * it (bound_check() may look past a short line's end): its length, at
 * least 1; 0 at the end.  A call returns a line, taking at least one byte,
 * or reads, taking in at least one more byte or reaching the end; a line
 * without LF is cut at SMLEN - 1 bytes, which a block holds.  So it ends.
 */
static size_t next_line(struct line_reader *r, char line[SMLEN])
{
	for (;;) {
		size_t avail = r->len - r->off, lim = avail < SMLEN - 1 ? avail : SMLEN - 1, k;
		const unsigned char *s = r->buf + r->off, *lf = memchr(s, '\n', lim);
		int got;

		if (lf != NULL || lim == SMLEN - 1 || (r->end && avail > 0)) {
			k = lf != NULL ? (size_t)(lf - s) + 1 : lim;
			memcpy(line, s, k);
			line[k] = '\0';
			r->off += k;
			return k;
		}
		if (r->end)
			return 0;
		memmove(r->buf, s, avail);
		r->off = 0;
		r->len = avail;
		got = BIO_read(r->in, r->buf + avail, (int)(sizeof(r->buf) - avail));
		if (got <= 0)
			r->end = 1;
		else
			r->len += (size_t)got;
	}
}

/* split_signed()'s writer of the signed part: blocks to its spool, which streams. */
struct part_writer {
	BIO *to;
	size_t len;
	unsigned long long written, mark;
	struct p11i_stream ws;
	unsigned char buf[SPLIT_BLOCK];
};

static int part_flush(struct part_writer *w)
{
	if (w->len > 0 && BIO_write(w->to, w->buf, (int)w->len) != (int)w->len)
		return -1;
	w->written += w->len;
	w->len = 0;
	return spool_wrote(w->to, &w->ws, w->written, &w->mark);
}

/* @p n is at most SMLEN: it fits in a block. */
static int part_put(struct part_writer *w, const void *p, size_t n)
{
	if (n > sizeof(w->buf) - w->len && part_flush(w) != 0)
		return -1;
	memcpy(w->buf + w->len, p, n);
	w->len += n;
	return 0;
}

/*
 * multipart/signed read as OpenSSL's SMIME_read_CMS() reads it, byte for
 * byte (lines of at most SMLEN, joined with CRLF), but with the signed
 * part going to a temporary file instead of memory: *bcont is that file,
 * *cms the signature.  @p body is the message after its header block: the
 * input file itself, read once, or our spool of it, whose pages are given
 * back as they are read when @p own is set.  Either way at most VERIFY_MAX
 * bytes are read (a file may grow while it is read).
 */
static p11s_rc split_signed(BIO *body, int own, const char *bound, CMS_ContentInfo **cms,
                            BIO **bcont, p11s_error *err)
{
	BIO *part = NULL, *sig = BIO_new(BIO_s_mem()), *b64 = NULL;
	struct line_reader *rd = calloc(1, sizeof(*rd));
	struct part_writer *pw = calloc(1, sizeof(*pw));
	p11i_headers *sh = NULL;
	char line[SMLEN], *ct = NULL, *type = NULL;
	size_t blen = strlen(bound), sig_len = 0, n;
	int first = 0, eol = 0, nparts = 0, done = 0, body_fd = own ? spool_fd(body) : -1;
	unsigned long long consumed = 0;
	struct p11i_stream rs = {0};
	p11s_rc rc = P11S_OK;

	*cms = NULL;
	*bcont = NULL;
	if (rd == NULL || pw == NULL || sig == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	/* End of data is the end, not "try again" (d2i_CMS_bio gives up on that). */
	BIO_set_mem_eof_return(sig, 0);
	part = p11i_spool_new(err);
	if (part == NULL) {
		rc = p11s_error_rc(err);
		goto out;
	}
	rd->in = body;
	pw->to = part;
	pw->mark = STREAM_STEP;
	while (!done && (n = next_line(rd, line)) > 0) {
		int state = bound_check(line, n, bound, blen), next_eol;

		if ((consumed += n) > VERIFY_MAX) {
			rc = too_large(err, VERIFY_MAX, "");
			goto out;
		}
		if (body_fd >= 0)
			p11i_stream_read(body_fd, &rs, (off_t)consumed);

		if (state == 1) {
			first = 1;
		} else if (state == 2) {
			done = 1;
		} else if (first || nparts == 1 || nparts == 2) {
			next_eol = strip_eol(line, &n);
			if (first) {
				first = 0;
				if (++nparts > 2) {
					rc = p11i_err(
					    err, P11S_E_INPUT,
					    "the multipart/signed message has more than two "
					    "parts");
					goto out;
				}
			} else if (eol) {
				if (nparts == 1 ? part_put(pw, "\r\n", 2) != 0
				                : BIO_write(sig, "\r\n", 2) != 2)
					goto ioerr;
			}
			eol = next_eol;
			if (nparts == 2 && (sig_len += n + 2) > SIG_PART_MAX) {
				rc = p11i_err(err, P11S_E_INPUT,
				              "the signature part is too large (over %u MiB)",
				              SIG_PART_MAX >> 20);
				goto out;
			}
			if (n > 0 && (nparts == 1 ? part_put(pw, line, n) != 0
			                          : BIO_write(sig, line, (int)n) != (int)n))
				goto ioerr;
		}
	}
	if (!done || nparts != 2) {
		rc = p11i_err(err, P11S_E_INPUT,
		              !done ? "the multipart/signed message has no closing boundary "
		                      "(truncated?)"
		                    : "the multipart/signed message does not have the two parts "
		                      "it needs (the signed content and the signature)");
		goto out;
	}
	/* The signature part: its own header block, then base64. */
	rc = p11i_headers_read(sig, 0, &sh, err);
	if (rc != P11S_OK)
		goto out;
	ct = p11i_headers_get(sh, "Content-Type");
	type = ct ? p11i_mime_media_type(ct) : NULL;
	if (type == NULL || (strcmp(type, "application/pkcs7-signature") != 0 &&
	                     strcmp(type, "application/x-pkcs7-signature") != 0)) {
		rc = p11i_err(err, P11S_E_INPUT,
		              "the second part of the multipart/signed message is %s, not "
		              "application/pkcs7-signature",
		              type ? type : "without a Content-Type");
		goto out;
	}
	b64 = BIO_new(BIO_f_base64());
	if (b64 == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	BIO_push(b64, sig);
	*cms = d2i_CMS_bio(b64, NULL);
	BIO_pop(b64);
	if (*cms == NULL) {
		ERR_clear_error();
		rc = p11i_err(err, P11S_E_INPUT,
		              "the signature part of the message cannot be read (damaged, or "
		              "not S/MIME)");
		goto out;
	}
	if (part_flush(pw) != 0 || BIO_flush(part) != 1 || BIO_seek(part, 0) != 0)
		goto ioerr;
	*bcont = part;
	part = NULL;
	goto out;
ioerr:
	rc = p11i_err(err, P11S_E_IO, "cannot write a temporary file: %s", strerror(errno));
out:
	/* Signed content passed through them (decrypted content, in a pipe from decrypt). */
	OPENSSL_clear_free(rd, sizeof(*rd));
	OPENSSL_clear_free(pw, sizeof(*pw));
	BIO_free(b64);
	BIO_free(sig);
	BIO_free(part);
	p11i_headers_free(sh);
	free(ct);
	free(type);
	return rc;
}

/* The boundary of a multipart/signed message (malloc'd), or NULL. */
static char *signed_boundary(const p11i_headers *outer)
{
	char *ct = p11i_headers_get(outer, "Content-Type");
	char *type = ct ? p11i_mime_media_type(ct) : NULL;
	char *bound =
	    type && strcmp(type, "multipart/signed") == 0 ? p11i_mime_param(ct, "boundary") : NULL;

	if (bound != NULL && *bound == '\0') {
		free(bound);
		bound = NULL;
	}
	free(ct);
	free(type);
	return bound;
}

/*
 * The CMS of the message in @p msg (just past its header block, @p outer)
 * and, when detached, the signed content.  multipart/signed goes through
 * split_signed() (bounded memory); anything else through OpenSSL's reader,
 * from the spool's start, which holds an opaque message's content in
 * memory (so at most HELD_MAX of @p size bytes).  @p own: @p msg is our
 * spool; else it is the input file itself, multipart/signed only.  NULL
 * *cms with P11S_OK: not S/MIME.
 */
static p11s_rc read_cms(BIO *msg, int own, unsigned long long size, const p11i_headers *outer,
                        CMS_ContentInfo **cms, BIO **bcont, p11s_error *err)
{
	char *bound = signed_boundary(outer);
	p11s_rc rc = P11S_OK;

	if (bound != NULL) {
		/* The body starts where the header block ended. */
		rc = split_signed(msg, own, bound, cms, bcont, err);
	} else if (!own) {
		/* The input itself is read only when it is multipart/signed (p11s_verify()). */
		rc = p11i_err(err, P11S_E_INTERNAL, "read_cms: not multipart/signed");
	} else if (size > HELD_MAX) {
		rc = too_large(err, HELD_MAX, " unless it is multipart/signed");
	} else if (BIO_seek(msg, 0) != 0) {
		rc = p11i_err(err, P11S_E_IO, "cannot read a temporary file: %s", strerror(errno));
	} else {
		/* Not CMS_BINARY: OpenSSL joins the signed part's lines with CRLF (canonical form).
		 */
		*cms = SMIME_read_CMS_ex(msg, 0, bcont, NULL);
	}
	free(bound);
	return rc;
}

/* ------------------------------------------------------------ the output */

/* The most of the signed entity's header block held to look at it. */
#define ENTITY_HEAD_MAX (256u * 1024)

/*
 * Where the signed content goes: with outer headers, the entity's header
 * block is held until complete (to see MIME-Version and a binary
 * Content-Transfer-Encoding), then the outer fields, then the entity.
 */
struct content_out {
	BIO *bio;
	const p11i_headers *outer; /* NULL: the entity only, as signed */
	int to_lf;                 /* CRLF -> LF for the entity */
	int head_done, cr;
	char *head;
	size_t head_len;
};

static int entity_head_has(const char *head, size_t len, const char *name, const char *value)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i + nl <= len; i++) {
		if ((i == 0 || head[i - 1] == '\n') && strncasecmp(head + i, name, nl) == 0) {
			size_t e = i + nl;

			if (value == NULL)
				return 1;
			while (e < len && (head[e] == ' ' || head[e] == '\t'))
				e++;
			if (len - e >= strlen(value) &&
			    strncasecmp(head + e, value, strlen(value)) == 0)
				return 1;
		}
	}
	return 0;
}

/* The end of the header block in @p h (the index after its blank line), or 0. */
static size_t entity_head_end(const char *h, size_t n)
{
	if (n > 0 && h[0] == '\n')
		return 1;
	if (n > 1 && h[0] == '\r' && h[1] == '\n')
		return 2;
	for (size_t i = 0; i + 1 < n; i++)
		if (h[i] == '\n') {
			if (h[i + 1] == '\n')
				return i + 2;
			if (h[i + 1] == '\r' && i + 2 < n && h[i + 2] == '\n')
				return i + 3;
		}
	return 0;
}

/* put_entity()'s output, gathered: a write per line cost a third of a large verify -o. */
struct gather {
	BIO *bio;
	size_t n;
	char b[16384];
};

static int gather_flush(struct gather *g)
{
	int ok = g->n == 0 || BIO_write(g->bio, g->b, (int)g->n) == (int)g->n;

	g->n = 0;
	return ok;
}

static int gather_put(struct gather *g, const char *p, size_t n)
{
	while (n > 0) {
		size_t k = sizeof(g->b) - g->n < n ? sizeof(g->b) - g->n : n;

		memcpy(g->b + g->n, p, k);
		g->n += k;
		p += k;
		n -= k;
		if (g->n == sizeof(g->b) && !gather_flush(g))
			return 0;
	}
	return 1;
}

static int put_entity(struct content_out *c, const char *buf, size_t len)
{
	struct gather g;
	size_t i = 0;
	int ok = 1;

	if (!c->to_lf)
		return BIO_write(c->bio, buf, (int)len) == (int)len;
	g.bio = c->bio;
	g.n = 0;
	/* A CR is held back until the next byte says whether it ends a line. */
	while (ok && i < len) {
		const char *cr;
		size_t end;

		if (c->cr) {
			c->cr = 0;
			if (buf[i] != '\n')
				ok = gather_put(&g, "\r", 1);
		}
		cr = memchr(buf + i, '\r', len - i);
		end = cr != NULL ? (size_t)(cr - buf) : len;
		ok = ok && gather_put(&g, buf + i, end - i);
		/* Past the CR, or to the end: i grows each turn. */
		c->cr = cr != NULL;
		i = cr != NULL ? end + 1 : len;
	}
	ok = gather_flush(&g) && ok;
	/* What passed through it: at most the input and a CR held from before. */
	OPENSSL_cleanse(g.b, len < sizeof(g.b) ? len + 1 : sizeof(g.b));
	return ok;
}

static int flush_entity_head(struct content_out *c)
{
	unsigned classes = P11I_HDR_OUTER;

	c->head_done = 1;
	if (entity_head_has(c->head, c->head_len, "content-transfer-encoding:", "binary"))
		c->to_lf = 0;
	/* The entity becomes the message's content: MIME-Version once, outside or in. */
	if (!entity_head_has(c->head, c->head_len, "mime-version:", NULL))
		classes |= P11I_HDR_MIME_VERSION;
	if (p11i_headers_write(c->outer, classes, c->bio, NULL) != P11S_OK)
		return 0;
	return put_entity(c, c->head, c->head_len);
}

static int content_write(struct content_out *c, const char *buf, size_t len)
{
	if (c->bio == NULL)
		return 1;
	if (c->outer == NULL)
		return BIO_write(c->bio, buf, (int)len) == (int)len;
	if (!c->head_done) {
		size_t take =
		    len < ENTITY_HEAD_MAX - c->head_len ? len : ENTITY_HEAD_MAX - c->head_len;

		if (c->head == NULL && (c->head = malloc(ENTITY_HEAD_MAX)) == NULL)
			return 0;
		memcpy(c->head + c->head_len, buf, take);
		c->head_len += take;
		buf += take;
		len -= take;
		if (entity_head_end(c->head, c->head_len) == 0 && c->head_len < ENTITY_HEAD_MAX)
			return 1;
		if (!flush_entity_head(c))
			return 0;
	}
	return len == 0 || put_entity(c, buf, len);
}

static int content_finish(struct content_out *c)
{
	if (c->bio == NULL || c->outer == NULL)
		return 1;
	if (!c->head_done && !flush_entity_head(c))
		return 0;
	return !c->cr || BIO_write(c->bio, "\r", 1) == 1;
}

static p11s_rc from_addresses(const p11i_headers *h, p11s_verify_report *r, p11s_error *err)
{
	static const char *const names[] = {"From", NULL};
	p11s_rc rc;

	rc = p11i_headers_addresses(h, names, &r->from, &r->n_from, err);
	if (rc == P11S_E_INPUT) {
		/*
		 * Real mail carries broken From headers.  The signature can still
		 * be checked; only the sender cannot be confirmed, which the
		 * verdict then says.
		 */
		r->from_error = p11i_strdup(p11s_error_message(err));
		p11s_error_clear(err);
		r->from = NULL;
		r->n_from = 0;
		return r->from_error ? P11S_OK : p11i_err_nomem(err);
	}
	return rc;
}

p11s_rc p11s_verify(BIO *in, BIO *content, const p11s_verify_opts *opts, p11s_verify_report **out,
                    p11s_error *err)
{
	p11s_verify_report *r = NULL;
	BIO *mem = NULL, *bcont = NULL, *digests = NULL;
	CMS_ContentInfo *cms = NULL;
	STACK_OF(X509) *msgcerts = NULL;
	STACK_OF(CMS_SignerInfo) * sis;
	X509_STORE *store = NULL;
	p11i_headers *outer = NULL;
	struct content_out cout = {0};
	p11s_rc rc;
	char buf[16384];
	int n, nid;
	p11s_verify_opts defaults = {0};
	unsigned long long size = 0, consumed = 0;
	struct p11i_stream rs = {0};
	long base = 0;
	int own = 1, bcont_fd;

	*out = NULL;
	if (opts == NULL)
		opts = &defaults;
	if (in == NULL)
		return p11i_err(err, P11S_E_USAGE, "p11s_verify: no input");
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return p11i_err_nomem(err);
	r->at = opts->at ? opts->at : time(NULL);
	/*
	 * A regular file (-i FILE) that is multipart/signed is read where it
	 * is, once: its copy to a temporary file was a third of the work of a
	 * large message (the signed part still goes to one, and the content is
	 * digested and written out from there, so what is written is what was
	 * digested even if the file changes).  Anything else is spooled.
	 */
	if (p11i_input_pos(in, &base) == 1) {
		struct stat st;
		char *bound;

		if (fstat(p11i_input_fd(in), &st) != 0 || st.st_size < base)
			st.st_size = base;
		if ((unsigned long long)(st.st_size - base) > VERIFY_MAX) {
			rc = too_large(err, VERIFY_MAX, "");
			goto out;
		}
		rc = p11i_headers_read(in, 0, &outer, err);
		if (rc != P11S_OK)
			goto out;
		if ((bound = signed_boundary(outer)) != NULL) {
			mem = in;
			own = 0;
			free(bound);
		} else if ((unsigned long long)(st.st_size - base) > HELD_MAX) {
			/* Refused now, not after a copy of more than a GiB (read_cms()). */
			rc = too_large(err, HELD_MAX, " unless it is multipart/signed");
			goto out;
		} else {
			p11i_headers_free(outer);
			outer = NULL;
			if (BIO_seek(in, base) != 0) {
				rc = p11i_err(err, P11S_E_IO, "cannot read the message again: %s",
				              strerror(errno));
				goto out;
			}
		}
	}
	if (mem == NULL) {
		rc = spool(in, &mem, &size, err);
		if (rc != P11S_OK)
			goto out;
		rc = p11i_headers_read(mem, 0, &outer, err);
		if (rc != P11S_OK)
			goto out;
	}
	cout.bio = content;
	if (!opts->entity_only) {
		cout.outer = outer;
		cout.to_lf = p11i_headers_eol(outer) == P11I_EOL_LF;
	}
	rc = read_cms(mem, own, size, outer, &cms, &bcont, err);
	if (rc != P11S_OK)
		goto out;
	if (cms == NULL) {
		/* Input of the wrong kind gets a sentence, not OpenSSL's parser codes. */
		char *ct = p11i_headers_get(outer, "Content-Type");
		char *type = ct ? p11i_mime_media_type(ct) : NULL;

		ERR_clear_error();
		if (type != NULL && strcmp(type, "multipart/signed") != 0 &&
		    strcmp(type, "application/pkcs7-mime") != 0 &&
		    strcmp(type, "application/x-pkcs7-mime") != 0)
			rc = p11i_err(err, P11S_E_INPUT,
			              "the message is not signed: its content is %s, not "
			              "multipart/signed or application/pkcs7-mime",
			              type);
		else if (type == NULL)
			rc = p11i_err(err, P11S_E_INPUT,
			              "the message is not signed: it has no Content-Type saying "
			              "multipart/signed or application/pkcs7-mime");
		else
			rc = p11i_err(err, P11S_E_INPUT,
			              "the message says it is %s but its signature part cannot "
			              "be read (damaged, or not S/MIME)",
			              type);
		free(ct);
		free(type);
		goto out;
	}
	nid = OBJ_obj2nid(CMS_get0_type(cms));
	if (nid == NID_pkcs7_enveloped || nid == NID_id_smime_ct_authEnvelopedData) {
		rc = p11i_err(err, P11S_E_INPUT,
		              "the message is encrypted, not signed: decrypt it first "
		              "(p11smime decrypt | p11smime verify)");
		goto out;
	}
	if (nid != NID_pkcs7_signed) {
		rc = p11i_err(err, P11S_E_INPUT, "the message is S/MIME but not signed (%s)",
		              OBJ_nid2ln(nid));
		goto out;
	}
	if (bcont == NULL && CMS_is_detached(cms)) {
		rc = p11i_err(err, P11S_E_INPUT, "a detached signature without the signed content");
		goto out;
	}
	/* Only now the From header: a message that is not signed costs no address parsing. */
	rc = from_addresses(outer, r, err);
	if (rc != P11S_OK)
		goto out;
	r->format = bcont ? "detached" : "opaque";
	sis = CMS_get0_SignerInfos(cms);
	if (sis == NULL || sk_CMS_SignerInfo_num(sis) == 0) {
		rc = p11i_err(err, P11S_E_INPUT, "the message carries no signature");
		goto out;
	}
	msgcerts = CMS_get1_certs(cms);
	/* Signer certificates from the message, or from --trust when it leaves them out. */
	CMS_set1_signers_certs(cms, opts->trust, 0);
	ERR_clear_error();

	/* Empty: the anchors go in as a trusted stack (check_chain). */
	store = X509_STORE_new();
	if (store == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}

	/* One pass over the content feeds every signer's digest and the output. */
	digests = CMS_dataInit(cms, bcont);
	if (digests == NULL) {
		rc = p11i_err_ossl(err, P11S_E_INPUT, "cannot read the signed content");
		goto out;
	}
	/* The signed part's spool, read once: its pages go behind the reader. */
	bcont_fd = bcont != NULL ? spool_fd(bcont) : -1;
	while ((n = BIO_read(digests, buf, sizeof(buf))) > 0) {
		if (!content_write(&cout, buf, (size_t)n)) {
			rc = p11i_err(err, P11S_E_IO, "cannot write the signed content");
			goto out;
		}
		if (bcont_fd >= 0)
			p11i_stream_read(bcont_fd, &rs, (off_t)(consumed += (size_t)n));
	}
	if (n < 0) {
		rc = p11i_err_ossl(err, P11S_E_INPUT, "cannot read the signed content");
		goto out;
	}
	if (!content_finish(&cout)) {
		rc = p11i_err(err, P11S_E_IO, "cannot write the signed content");
		goto out;
	}

	r->n_signers = (size_t)sk_CMS_SignerInfo_num(sis);
	r->signers = calloc(r->n_signers, sizeof(*r->signers));
	if (r->signers == NULL) {
		r->n_signers = 0;
		rc = p11i_err_nomem(err);
		goto out;
	}
	for (size_t i = 0; i < r->n_signers; i++) {
		rc = fill_signer(&r->signers[i], sk_CMS_SignerInfo_value(sis, (int)i), digests,
		                 store, msgcerts, opts, r->at, err);
		if (rc != P11S_OK)
			goto out;
	}
	rc = judge(r);
	if (rc != P11S_OK)
		p11i_err(err, rc, "out of memory");
out:
	/* CMS_dataInit pushed its digest BIOs onto bcont; free only those. */
	p11i_bio_free_upto(digests, bcont);
	BIO_free(bcont);
	if (own)
		BIO_free(mem);
	X509_STORE_free(store);
	sk_X509_pop_free(msgcerts, X509_free);
	CMS_ContentInfo_free(cms);
	p11i_headers_free(outer);
	free(cout.head);
	ERR_clear_error();
	if (rc != P11S_OK) {
		p11s_verify_report_free(r);
		return rc;
	}
	*out = r;
	return P11S_OK;
}

/* ----------------------------------------------------------------- getters */

#define SIGNER(r, i) (&(r)->signers[i])

p11s_rc p11s_verify_report_rc(const p11s_verify_report *r)
{
	return r->rc;
}

const char *p11s_verify_report_summary(const p11s_verify_report *r)
{
	return r->summary;
}

const char *p11s_verify_report_format(const p11s_verify_report *r)
{
	return r->format;
}

size_t p11s_verify_report_from_count(const p11s_verify_report *r)
{
	return r->n_from;
}

const char *p11s_verify_report_from(const p11s_verify_report *r, size_t i)
{
	return i < r->n_from ? r->from[i] : NULL;
}

int p11s_verify_report_sender_ok(const p11s_verify_report *r)
{
	return r->sender_ok;
}

size_t p11s_verify_report_signer_count(const p11s_verify_report *r)
{
	return r->n_signers;
}

p11s_sig_verdict p11s_verify_signer_verdict(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->verdict;
}

const char *p11s_verify_signer_reason(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->reason;
}

X509 *p11s_verify_signer_cert(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->cert;
}

const char *p11s_verify_signer_subject(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->subject;
}

const char *p11s_verify_signer_issuer(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->issuer;
}

const char *p11s_verify_signer_serial(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->serial;
}

const char *p11s_verify_signer_digest(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->digest;
}

const char *p11s_verify_signer_signature_alg(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->sigalg;
}

size_t p11s_verify_signer_email_count(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->n_emails;
}

const char *p11s_verify_signer_email(const p11s_verify_report *r, size_t i, size_t j)
{
	return j < SIGNER(r, i)->n_emails ? SIGNER(r, i)->emails[j] : NULL;
}

int p11s_verify_signer_signing_time(const p11s_verify_report *r, size_t i, time_t *t)
{
	if (SIGNER(r, i)->has_time && t != NULL)
		*t = SIGNER(r, i)->signing_time;
	return SIGNER(r, i)->has_time;
}

int p11s_verify_signer_valid_at_signing(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->valid_at_signing;
}

int p11s_verify_signer_valid_at(const p11s_verify_report *r, size_t i, time_t *not_after)
{
	if (not_after != NULL && SIGNER(r, i)->cert != NULL)
		*not_after = asn1_time(X509_get0_notAfter(SIGNER(r, i)->cert));
	return SIGNER(r, i)->valid_at;
}

size_t p11s_verify_signer_chain_count(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->n_chain;
}

const char *p11s_verify_signer_chain_subject(const p11s_verify_report *r, size_t i, size_t j)
{
	return j < SIGNER(r, i)->n_chain ? SIGNER(r, i)->chain[j] : NULL;
}

const p11s_verdict *p11s_verify_signer_rules(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->rules;
}

const char *p11s_verify_signer_sender_matched_by(const p11s_verify_report *r, size_t i)
{
	switch (SIGNER(r, i)->sender_place) {
	case P11I_MAILBOX_IN_SAN:
		return "subjectAltName";
	case P11I_MAILBOX_IN_SUBJECT:
		return "subject-emailAddress";
	default:
		return NULL;
	}
}

int p11s_verify_signer_validity(const p11s_verify_report *r, size_t i, time_t *not_before,
                                time_t *not_after)
{
	X509 *x = SIGNER(r, i)->cert;

	if (x == NULL)
		return 0;
	if (not_before != NULL)
		*not_before = asn1_time(X509_get0_notBefore(x));
	if (not_after != NULL)
		*not_after = asn1_time(X509_get0_notAfter(x));
	return 1;
}

time_t p11s_verify_signer_checked_at(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->checked_at;
}

time_t p11s_verify_report_time(const p11s_verify_report *r)
{
	return r->at;
}

const char *p11s_verify_report_from_error(const p11s_verify_report *r)
{
	return r->from_error;
}
