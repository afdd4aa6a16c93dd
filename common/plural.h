/*
 * plural.h — the noun that goes with a count in what people read.
 *
 * schakeld, schakel, schakelctl and libschakel say "1 rule", "2 rules",
 * "0 rules" in their messages; machine-readable output (JSON members,
 * key=value log fields) carries numbers alone and needs none of this.
 */
#ifndef SCHAKEL_PLURAL_H
#define SCHAKEL_PLURAL_H

/* `one` for a count of 1, `many` for any other (0 included): the caller
 * spells both, irregular plurals too ("entry", "entries"). Returns one of
 * the two pointers it was given; no allocation, safe with any count. */
const char *plural(unsigned long long count, const char *one, const char *many);

#endif
