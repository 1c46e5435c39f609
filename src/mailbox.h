/*
 * Private to src/: the one reader of e-mail addresses in certificates.
 *
 * An rfc822Name (RFC 5280 4.2.1.6) and the subject's PKCS #9 emailAddress
 * hold a Mailbox of RFC 5321 4.1.2: a dot-atom or quoted local part, "@",
 * and a domain of LDH labels or an address literal.  Anything else there is
 * not an e-mail address, and every command treats it so.
 */
#ifndef P11I_MAILBOX_H
#define P11I_MAILBOX_H

#include <stddef.h>

#include <openssl/x509.h>

/* The longest mailbox RFC 5321 allows (a 256-octet path less its brackets). */
#define P11I_MAILBOX_MAX 254

/*
 * 1 when the @p len bytes at @p s are a Mailbox; else 0, with the reason in
 * words ("no @") in @p why (may be NULL) when @p whylen > 0.  Reads at most
 * @p len bytes; NUL bytes inside are not allowed.
 */
int p11i_mailbox_parse(const char *s, size_t len, char *why, size_t whylen);

/* p11i_mailbox_parse() of a NUL-terminated string, without a reason. */
int p11i_mailbox_valid(const char *s);

/*
 * 1 when @p a and @p b are both mailboxes and the same address, compared
 * without regard to ASCII case (as mail users and the issue of record
 * expect); else 0.
 */
int p11i_mailbox_equal(const char *a, const char *b);

/* Where a certificate holds an address. */
typedef enum {
	P11I_MAILBOX_IN_SAN = 1,     /* an rfc822Name in subjectAltName */
	P11I_MAILBOX_IN_SUBJECT = 2, /* a PKCS #9 emailAddress in the subject */
} p11i_mailbox_place;

/*
 * The mailboxes of @p cert in @p where (a mask of p11i_mailbox_place), in
 * certificate order, subjectAltName first; entries that are not mailboxes
 * are left out.  A NULL-terminated vector (p11s_strv_free()); *n (may be
 * NULL) gets the count.  NULL on ENOMEM.
 */
char **p11i_cert_mailboxes(X509 *cert, unsigned where, size_t *n);

/*
 * Which place of @p cert holds @p address (p11i_mailbox_equal()):
 * P11I_MAILBOX_IN_SAN, else P11I_MAILBOX_IN_SUBJECT, else 0.  Only the
 * places in @p where are looked at.
 */
int p11i_cert_has_mailbox(X509 *cert, const char *address, unsigned where);

/*
 * The rfc822Names of @p cert that are not mailboxes, each as
 * "'nobody' is not an e-mail address (no @)" (other than printable ASCII
 * shown as \xNN).  Vector as above; NULL on ENOMEM.
 */
char **p11i_cert_bad_mailboxes(X509 *cert, size_t *n);

#endif
