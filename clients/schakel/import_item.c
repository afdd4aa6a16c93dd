/*
 * import_item.c — one record of an import file as the signal it publishes:
 * the record as a JSON object (import_read.c), its members as a
 * schakel_signal_t (jsonio.c), its own message_id, the size of the Signal
 * libschakel will serialize (libschakel's own signal_pb.c, which its
 * encoding goes through too), and the digest of its bytes that its batch's
 * message id covers. All of it before anything is signed or sent, and on
 * untrusted input: a record that cannot be a signal is refused with a text
 * that says why (the caller names the line); the values themselves are the
 * broker's to check.
 */
#include "import.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "signal_pb.h"
#include "syntax.h"

void import_item_free(import_item_t *item)
{
    free(item->recipients);
    json_decref(item->object);
    memset(item, 0, sizeof *item);
}

/* Fill the item from its object; returns 0, or -1 with err. */
static int import_item_fill(import_item_t *item, const char *sender, char *err, size_t errlen)
{
    const char *hex = NULL;
    if (jsonio_signal_from_json(item->object, &item->signal, &item->recipients, &hex, err,
                                errlen) != 0)
        return -1;
    if (hex != NULL) {
        if (strlen(hex) != 2 * SCHAKEL_MESSAGE_ID_BYTES ||
            syntax_unhex(hex, item->given_id, sizeof item->given_id) != 0) {
            snprintf(err, errlen, "\"message_id\" must be 32 hex digits");
            return -1;
        }
        item->has_given_id = 1;
    }
    item->encoded = signal_pb_packed_size(&item->signal, sender);
    if (item->encoded > SCHAKEL_MAX_ITEM_BYTES) {
        snprintf(err, errlen, "the signal encodes to %zu bytes; at most %u are allowed",
                 item->encoded, SCHAKEL_MAX_ITEM_BYTES);
        return -1;
    }
    return 0;
}

int import_item_read(import_item_t *item, import_reader_t *reader, const char *sender, char *err,
                     size_t errlen)
{
    memset(item, 0, sizeof *item);
    item->line = reader->record_line;
    item->object = import_reader_object(reader, err, errlen);
    if (item->object == NULL || import_item_fill(item, sender, err, errlen) != 0) {
        import_item_free(item);
        return -1;
    }
    crypto_generichash(item->digest, sizeof item->digest, (const unsigned char *)reader->raw,
                       reader->raw_len, NULL, 0);
    return 0;
}
