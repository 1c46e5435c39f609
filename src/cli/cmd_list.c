#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "p11smime/certs.h"

static void list_usage(FILE *fp)
{
	fprintf(fp, "Usage: p11smime [GLOBAL OPTIONS] list [--login] [URI]\n"
	            "       p11smime [GLOBAL OPTIONS] list [--login] --select URI|E-MAIL\n"
	            "\n"
	            "List the certificates, private keys and public keys on every token, or on\n"
	            "those and the objects matching the pkcs11: URI, each with the URI that\n"
	            "selects exactly it.  Each certificate is paired with its private key by\n"
	            "CKA_ID, and the pairing is confirmed by comparing the public keys.\n"
	            "With the global --json: {\"objects\":[...]} (docs/json-list.md).\n"
	            "\n"
	            "Options:\n"
	            "  -l, --login  log in first (PIN from --pin-source, the URI's pin-source or\n"
	            "               pin-value, else asked on the terminal), to see private keys\n"
	            "  -s, --select URI|E-MAIL\n"
	            "               show the one certificate that URI (of the certificate or of\n"
	            "               its private key) or E-MAIL (a SAN address) selects, as sign,\n"
	            "               decrypt and encrypt would; exit 3 listing the candidates'\n"
	            "               URIs when it selects several, exit 3 when none\n"
	            "  -h, --help   this help\n"
	            "\n"
	            "Exit codes: 0 success, 2 usage error, 3 module, token or PIN error, or the\n"
	            "URI matches no token or names objects that are not there.\n");
}

static void print_id(const p11s_object *o)
{
	size_t len;
	const unsigned char *id = p11s_object_id(o, &len);

	printf("  id:          ");
	for (size_t i = 0; id && i < len; i++)
		printf("%02x", id[i]);
	printf("%s\n", id ? "" : "(none)");
}

static void print_key_size(const p11s_object *o)
{
	int bits = p11s_object_key_bits(o);
	const char *curve = p11s_object_key_curve(o);

	printf("  key:         %s", p11s_key_type_name(p11s_object_key_type(o)));
	if (curve)
		printf(" %s", curve);
	if (bits > 0)
		printf(" (%d bits)", bits);
	printf("\n");
}

static void print_cert(const p11s_object *o)
{
	p11s_cert_info *ci = NULL;
	const p11s_object *k;
	p11s_pairing p = p11s_object_pairing(o);
	char nb[32], na[32];
	size_t len;
	const unsigned char *der = p11s_object_value(o, &len);

	if (der == NULL || p11s_cert_describe_der(der, len, &ci, NULL) != P11S_OK) {
		printf("  (the certificate does not parse)\n");
	} else {
		printf("  subject:     %s\n", ci->subject);
		printf("  issuer:      %s\n", ci->issuer);
		printf("  serial:      %s\n", ci->serial);
		printf("  valid:       %s to %s\n",
		       p11s_time_format(ci->not_before, nb, sizeof(nb)),
		       p11s_time_format(ci->not_after, na, sizeof(na)));
		printf("  e-mail:      ");
		for (size_t i = 0; i < ci->nemails; i++)
			printf("%s%s", i ? ", " : "", ci->emails[i]);
		printf("%s\n", ci->nemails ? "" : "(none)");
		printf("  key:         %s", ci->key_algorithm);
		if (ci->curve)
			printf(" %s", ci->curve);
		if (ci->key_bits > 0)
			printf(" (%d bits)", ci->key_bits);
		printf("\n");
		p11s_cert_info_free(ci);
	}
	switch (p) {
	case P11S_PAIR_CONFIRMED:
		printf("  private key: %s\n", p11s_object_uri(p11s_object_private_key(o)));
		printf("               (same CKA_ID, public key confirmed from %s)\n",
		       p11s_pair_evidence_name(p11s_object_pairing_evidence(o)));
		break;
	case P11S_PAIR_UNCONFIRMED:
		printf("  private key: %s\n", p11s_object_uri(p11s_object_private_key(o)));
		printf("               (same CKA_ID; UNCONFIRMED: the token shows no public key to "
		       "compare)\n");
		break;
	case P11S_PAIR_MISMATCH:
		k = p11s_object_id_key(o);
		printf(
		    "  private key: MISMATCH: the key with the same CKA_ID is a different key\n");
		printf("               %s\n", k ? p11s_object_uri(k) : "");
		break;
	case P11S_PAIR_NOT_LOGGED_IN:
		printf("  private key: not visible without logging in (list --login)\n");
		break;
	default:
		printf("  private key: none on the token\n");
	}
}

static void print_key(const p11s_object *o)
{
	unsigned kf = p11s_object_key_flags(o);
	const p11s_object *c;

	print_key_size(o);
	if (p11s_object_get_class(o) == P11S_OBJ_PRIVATE_KEY) {
		printf("  usage:      %s%s%s%s%s\n", kf & P11S_KF_SIGN ? " sign" : "",
		       kf & P11S_KF_DECRYPT ? " decrypt" : "", kf & P11S_KF_DERIVE ? " derive" : "",
		       kf & P11S_KF_UNWRAP ? " unwrap" : "",
		       kf & (P11S_KF_SIGN | P11S_KF_DECRYPT | P11S_KF_DERIVE | P11S_KF_UNWRAP)
		           ? ""
		           : " (none)");
		printf("  protection:  %s, %s%s\n",
		       kf & P11S_KF_SENSITIVE ? "sensitive" : "NOT SENSITIVE",
		       kf & P11S_KF_EXTRACTABLE ? "EXTRACTABLE" : "not extractable",
		       kf & P11S_KF_ALWAYS_AUTHENTICATE
		           ? ", PIN for every use (always authenticate)"
		           : "");
		c = p11s_object_certificate(o);
		printf("  certificate: %s\n", c ? p11s_object_uri(c) : "(none paired)");
	} else {
		printf("  usage:      %s%s%s%s\n", kf & P11S_KF_VERIFY ? " verify" : "",
		       kf & P11S_KF_ENCRYPT ? " encrypt" : "", kf & P11S_KF_WRAP ? " wrap" : "",
		       kf & P11S_KF_DERIVE ? " derive" : "");
	}
}

static void print_object(const p11s_object *obj, const p11s_token **last, int login)
{
	const p11s_token *t = p11s_object_token(obj);
	const char *label = p11s_object_label(obj);

	if (t != *last) {
		printf("%sToken '%s'  %s\n", *last ? "\n" : "", cli_safe(p11s_token_label(t)),
		       p11s_token_uri(t));
		/* Some cards keep certificates private too: say what may be missing. */
		if (!login && (p11s_token_flags(t) & P11S_TOKEN_LOGIN_REQUIRED))
			printf("  (not logged in: private objects are hidden, the keys and any "
			       "certificates the token keeps private; list --login shows them)\n");
		*last = t;
	}
	printf("\n%s '%s'\n",
	       p11s_object_get_class(obj) == P11S_OBJ_CERTIFICATE   ? "Certificate"
	       : p11s_object_get_class(obj) == P11S_OBJ_PRIVATE_KEY ? "Private key"
	                                                            : "Public key",
	       cli_safe(label));
	printf("  uri:         %s\n", p11s_object_uri(obj));
	print_id(obj);
	if (p11s_object_get_class(obj) == P11S_OBJ_CERTIFICATE)
		print_cert(obj);
	else
		print_key(obj);
}

int cmd_list(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"login", no_argument, NULL, 'l'},
	    {"select", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	p11s_objects_opts o = {0};
	p11s_object_list *list = NULL;
	const p11s_token *last = NULL;
	const char *uri = NULL, *select = NULL;
	const p11s_object *chosen = NULL, *sel[2];
	size_t nsel = 0;
	p11s_ctx *ctx;
	p11s_rc rc;
	int c;

	while ((c = getopt_long(argc, argv, "ls:h", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			o.login = 1;
			break;
		case 's':
			select = optarg;
			break;
		case 'h':
			list_usage(stdout);
			return 0;
		default:
			list_usage(stderr);
			return 2;
		}
	}
	if (optind < argc)
		uri = argv[optind++];
	if (optind < argc)
		return cli_usage_error("list", "one URI at most");
	if (select != NULL && uri != NULL)
		return cli_usage_error("list", "--select takes the place of the URI");
	ctx = cli_ctx(cli);
	if (ctx == NULL)
		return cli->ctx_exit;
	if (select != NULL)
		rc = p11s_select_certificate(ctx, select, &o, &list, &chosen, cli->err);
	else
		rc = p11s_objects(ctx, uri, &o, &list, cli->err);
	if (rc != P11S_OK)
		return cli_fail(cli, rc);
	if (chosen != NULL) {
		/* The selected certificate and, when paired, its key: nothing else. */
		sel[0] = chosen;
		sel[1] = p11s_object_private_key(chosen);
		nsel = sel[1] ? 2 : 1;
	}
	if (cli->json) {
		char *doc =
		    chosen ? report_objects_json_array(sel, nsel) : report_objects_json(list);

		p11s_object_list_free(list);
		if (doc == NULL) {
			fprintf(stderr, "p11smime: out of memory\n");
			return 4;
		}
		cli_print_json(doc);
		return 0;
	}
	if (chosen == NULL && p11s_object_list_count(list) == 0)
		printf("No objects%s.\n",
		       o.login ? "" : " visible without logging in (try list --login)");
	for (size_t i = 0; i < (chosen ? nsel : p11s_object_list_count(list)); i++)
		print_object(chosen ? sel[i] : p11s_object_list_get(list, i), &last, o.login);
	p11s_object_list_free(list);
	return 0;
}
