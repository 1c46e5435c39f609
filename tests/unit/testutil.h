/* Helpers for the unit tests: certificates and keys made in memory. */
#ifndef P11S_TESTUTIL_H
#define P11S_TESTUTIL_H
#include <openssl/evp.h>
#include <openssl/x509.h>
#endif
