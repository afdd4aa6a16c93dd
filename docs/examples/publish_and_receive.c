/*
 * publish_and_receive.c: libschakel from end to end. One principal
 * publishes a signal, another receives it and acknowledges it.
 *
 *   cc -o publish_and_receive publish_and_receive.c \
 *       $(pkg-config --cflags --libs libschakel)
 *   ./publish_and_receive tcp://127.0.0.1:7450 keys/broker.pub \
 *       keys/politie-bvh-koppeling.key keys/om-parket.key
 *
 * The broker's policy must let the first principal send this signal
 * (theme ondermijning, area GM0935) to the second one's partner.
 * Exit status 0 once the signal was received and acknowledged, else 1.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <schakel.h>

#define TIMEOUT_MS 10000
#define PUBLISH_TRIES 3

/* What failed, in words: the status, the broker's reason, the text. */
static int report(const char *what, schakel_status_t status, const schakel_error_t *err)
{
    fprintf(stderr, "%s: %s", what, schakel_strerror(status));
    if (status == SCHAKEL_ERR_REFUSED)
        fprintf(stderr, " (%s)", err->reason_name);
    fprintf(stderr, ": %s\n", err->text);
    return 1;
}

static void hex(const uint8_t id[16], char out[33])
{
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", id[i]);
}

/* A refusal that the same publish, sent again under its message id, may
 * get past (docs/PROTOCOL.md, section 8). */
static int worth_retrying(schakel_status_t status, const schakel_error_t *err)
{
    if (status == SCHAKEL_ERR_TIMEOUT)
        return 1;
    return status == SCHAKEL_ERR_REFUSED && (err->reason == SCHAKEL_REASON_UNAVAILABLE ||
                                             err->reason == SCHAKEL_REASON_INTERNAL_ERROR ||
                                             err->reason == SCHAKEL_REASON_RATE_LIMITED);
}

/* Publish one signal; a timeout or a passing refusal is retried with the
 * same message id and the same signal, which the broker stores once. */
static int publish(schakel_client_t *sender, uint8_t message_id[16])
{
    schakel_signal_t sig = {
        .kind = "witwassen",
        .theme = "ondermijning",
        .area = "GM0935",
        .severity = SCHAKEL_SEVERITY_HIGH,
        .observed_at = (int64_t)time(NULL) - 3600, /* fixed once: a retry sends the same */
        .summary = "Contante aankoop van drie panden via een stichting",
        .source_ref = "BVH-2026-0042",
    };
    schakel_item_result_t result;
    int duplicate = 0;
    schakel_status_t status = SCHAKEL_OK;
    for (int try = 0; try < PUBLISH_TRIES; try++) {
        /* the first try draws a random id into message_id; retries reuse it */
        status = schakel_publish(sender, NULL, &sig, 1, try == 0 ? NULL : message_id, message_id,
                                 &result, &duplicate, TIMEOUT_MS);
        if (status == SCHAKEL_OK || !worth_retrying(status, schakel_last_error(sender)))
            break;
    }
    if (status != SCHAKEL_OK)
        return report("publish", status, schakel_last_error(sender));
    char id[33];
    hex(message_id, id);
    printf("accepted seq=%" PRIu64 " recipients=%" PRIu32 " message_id=%s%s\n", result.seq,
           result.recipients, id, duplicate ? " duplicate" : "");
    return 0;
}

/* Receive until the signal with message_id comes, acknowledging each
 * delivery once it is handled (here: printed). */
static int receive(schakel_client_t *receiver, const uint8_t message_id[16])
{
    for (;;) {
        schakel_delivery_t *delivery = NULL;
        schakel_status_t status = schakel_receive(receiver, &delivery, TIMEOUT_MS);
        if (status != SCHAKEL_OK)
            return report("receive", status, schakel_last_error(receiver));
        char id[33];
        hex(delivery->message_id, id);
        printf("received seq=%" PRIu64 " item_seq=%" PRIu64 " message_id=%s from=%s rule=%s%s\n",
               delivery->seq, delivery->item_seq, id, delivery->sender, delivery->rule_id,
               delivery->redelivery ? " redelivery" : "");
        if (!delivery->is_case_event)
            printf("  kind=%s theme=%s area=%s summary=%s\n", delivery->kind, delivery->theme,
                   delivery->area != NULL ? delivery->area : "-",
                   delivery->summary != NULL ? delivery->summary : "-");
        uint64_t seq = delivery->seq;
        int ours = !delivery->is_case_event &&
                   memcmp(delivery->message_id, message_id, sizeof delivery->message_id) == 0;
        schakel_delivery_free(&delivery);
        /* Does not wait for the broker; a refusal shows in the last error. */
        status = schakel_ack(receiver, seq);
        if (status != SCHAKEL_OK)
            return report("ack", status, schakel_last_error(receiver));
        printf("acked seq=%" PRIu64 "\n", seq);
        if (ours)
            return 0;
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s ENDPOINT BROKER.pub SENDER.key RECEIVER.key\n", argv[0]);
        return 2;
    }
    schakel_client_t *sender = NULL, *receiver = NULL;
    schakel_error_t err;
    char principal[130];
    uint8_t message_id[16];
    uint64_t backlog = 0;
    int failed = 1;

    schakel_status_t status = schakel_connect(&sender, argv[1], argv[2], argv[3], TIMEOUT_MS, &err);
    if (status != SCHAKEL_OK)
        return report("connect (sender)", status, &err);
    status = schakel_connect(&receiver, argv[1], argv[2], argv[4], TIMEOUT_MS, &err);
    if (status != SCHAKEL_OK) {
        report("connect (receiver)", status, &err);
        goto out;
    }
    status = schakel_whoami(sender, principal, NULL, NULL, TIMEOUT_MS);
    if (status != SCHAKEL_OK) {
        report("whoami", status, schakel_last_error(sender));
        goto out;
    }
    printf("sender=%s\n", principal);
    if (publish(sender, message_id) != 0 || receive(receiver, message_id) != 0)
        goto out;
    /* The broker's count after every ack sent before this call. */
    status = schakel_backlog(receiver, &backlog, TIMEOUT_MS);
    if (status != SCHAKEL_OK) {
        report("backlog", status, schakel_last_error(receiver));
        goto out;
    }
    printf("backlog=%" PRIu64 "\n", backlog);
    failed = 0;
out:
    schakel_close(&receiver);
    schakel_close(&sender);
    return failed;
}
