/*
 * libp11smime.so is the archives linked whole (cmake/shared.cmake); a
 * shared library target needs one source of its own, and this is it.
 */
typedef int p11i_shared_object_has_no_code_of_its_own;
