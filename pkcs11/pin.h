/*
 * PIN sources: read by p11s_secret_read() (p11smime/util.h, src/secret.c)
 * with P11S_SECRET_PIN; tested in tests/unit/test_pin.c.
 */
#ifndef P11I_PIN_H
#define P11I_PIN_H

/* The longest PIN we read; PKCS#11 modules take far shorter ones. */
#define P11I_PIN_MAX 256

#endif
