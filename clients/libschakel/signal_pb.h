/*
 * signal_pb.h — a schakel_signal_t as the protobuf Signal it is sent as:
 * the one place that says which field goes where. libschakel encodes its
 * publishes with it, `schakel import` predicts their sizes with it (to cut
 * batches under the frame limit, it must agree with the encoding to the
 * byte) and tests/fuzz/fuzz_import.c encodes as libschakel does with it.
 * Internal: not installed, and not exported from libschakel.so (the
 * version script keeps only schakel_*); the CLI links libschakel.a.
 */
#ifndef SCHAKEL_SIGNAL_PB_H
#define SCHAKEL_SIGNAL_PB_H

#include <stddef.h>
#include <stdint.h>

#include "schakel.h"
#include "wire.h"

/* Fill *signal (and *address, used when the signal has an address) from
 * `in`, with `sender` as its sender. Nothing is copied: the strings and the
 * recipient list are lent from `in` and `sender`, so *signal is valid while
 * they are, is only to be read (packed), and is never freed with
 * schakel__signal__free_unpacked. NULL strings and zero numbers stay
 * absent, as schakel.h says. No allocation, no failure; nothing is checked
 * (the broker checks the values). */
void signal_pb_fill(Schakel__Signal *signal, Schakel__Address *address, const schakel_signal_t *in,
                    const char *sender);

/* Bytes of the packed Signal signal_pb_encode makes of `in` from sender. */
size_t signal_pb_packed_size(const schakel_signal_t *in, const char *sender);

/* The packed Signal of `in` from sender in a new malloc'd buffer (the
 * caller frees it), its length in *len; NULL when out of memory. */
uint8_t *signal_pb_encode(const schakel_signal_t *in, const char *sender, size_t *len);

#endif
