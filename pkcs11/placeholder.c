/* placeholder: the pkcs11 layer is being written */
typedef int p11s_placeholder;
