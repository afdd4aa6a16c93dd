/*
 * delivery.h — decoding a broker's Deliver into the public schakel_delivery_t.
 * Internal to libschakel (not installed).
 */
#ifndef SCHAKEL_DELIVERY_H
#define SCHAKEL_DELIVERY_H

#include <stddef.h>

#include "schakel.h"
#include "wire.h"

/* Decode a Deliver (already through wire_decode_frame) into a new delivery
 * the caller frees with schakel_delivery_free. Safe on untrusted input: the
 * signal bytes are unpacked under SCHAKEL_DECODE_BUDGET_BYTES and every
 * string is checked for UTF-8. Returns SCHAKEL_OK with *out set, or
 * SCHAKEL_ERR_PROTOCOL / SCHAKEL_ERR_NOMEM with *out NULL and a text naming
 * the delivery's seq in text. */
schakel_status_t delivery_decode(const Schakel__Deliver *in, schakel_delivery_t **out, char *text,
                                 size_t textlen);

#endif
