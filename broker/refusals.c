/*
 * refusals.c — which refusals (of handshakes, of requests) get an audit
 * entry of their own, and the summary of the others (refusals.h). Trusts nothing of the peer
 * text but its length (it is cut, and only copied). No errors: a full
 * peer table counts the rest in one total.
 */
#include "refusals.h"

#include <stdio.h>
#include <string.h>

const refusals_kind_t refusals_requests = {"principals", REFUSALS_REQUESTS_PER_PRINCIPAL,
                                           REFUSALS_REQUESTS_PER_WINDOW};
const refusals_kind_t refusals_undeliverable = {"principals", REFUSALS_UNDELIVERABLE_PER_PRINCIPAL,
                                                REFUSALS_UNDELIVERABLE_PER_WINDOW};
const refusals_kind_t refusals_acks_limited = {"principals", REFUSALS_ACKS_LIMITED_PER_PRINCIPAL,
                                               REFUSALS_ACKS_LIMITED_PER_WINDOW};
static const refusals_kind_t refusals_handshakes = {"peers", REFUSALS_PER_PEER,
                                                    REFUSALS_PER_WINDOW};

static const refusals_kind_t *refusals_kind(const refusals_t *r)
{
    return r->kind != NULL ? r->kind : &refusals_handshakes;
}

static refusals_peer_t *refusals_peer(refusals_t *r, const char *peer)
{
    for (size_t i = 0; i < r->n_peers; i++)
        if (strcmp(r->peers[i].peer, peer) == 0)
            return &r->peers[i];
    if (r->n_peers == REFUSALS_PEERS)
        return NULL;
    refusals_peer_t *p = &r->peers[r->n_peers++];
    memset(p, 0, sizeof *p);
    snprintf(p->peer, sizeof p->peer, "%s", peer);
    return p;
}

int refusals_take(refusals_t *r, const char *peer, int64_t now_s)
{
    char cut[REFUSALS_PEER_LEN + 1];
    snprintf(cut, sizeof cut, "%s", peer != NULL && peer[0] != '\0' ? peer : "-");
    if (r->window_start_s == 0)
        r->window_start_s = now_s;
    refusals_peer_t *p = refusals_peer(r, cut);
    const refusals_kind_t *kind = refusals_kind(r);
    if ((p == NULL || p->recorded < kind->per_key) && r->recorded < kind->per_window) {
        if (p != NULL)
            p->recorded++;
        r->recorded++;
        return 1;
    }
    r->counted++;
    if (p != NULL)
        p->counted++;
    else
        r->counted_elsewhere++;
    return 0;
}

/* "peers=A:N,B:N,...,others:N", as far as it fits whole into out. */
static void refusals_peer_list(const refusals_t *r, char *out, size_t outlen)
{
    size_t used = (size_t)snprintf(out, outlen, "%s=", refusals_kind(r)->keys);
    if (used >= outlen)
        return;
    uint64_t left_out = r->counted_elsewhere;
    int first = 1;
    for (size_t i = 0; i < r->n_peers; i++) {
        const refusals_peer_t *p = &r->peers[i];
        if (p->counted == 0)
            continue;
        char one[REFUSALS_PEER_LEN + 24];
        int n = snprintf(one, sizeof one, "%s%s:%llu", first ? "" : ",", p->peer,
                         (unsigned long long)p->counted);
        if (n > 0 && used + (size_t)n + 32 < outlen) {
            memcpy(out + used, one, (size_t)n + 1);
            used += (size_t)n;
            first = 0;
        } else {
            left_out += p->counted;
        }
    }
    if (left_out > 0 && used < outlen)
        snprintf(out + used, outlen - used, "%sothers:%llu", first ? "" : ",",
                 (unsigned long long)left_out);
}

uint64_t refusals_summary(refusals_t *r, int64_t now_s, int force, char *out, size_t outlen)
{
    if (r->window_start_s == 0 || (!force && now_s < r->window_start_s + REFUSALS_WINDOW_S))
        return 0;
    uint64_t counted = r->counted;
    if (counted > 0 && outlen > 0) {
        int n =
            snprintf(out, outlen, "suppressed=%llu window_s=%d since=%lld ",
                     (unsigned long long)counted, REFUSALS_WINDOW_S, (long long)r->window_start_s);
        if (n > 0 && (size_t)n < outlen)
            refusals_peer_list(r, out + n, outlen - (size_t)n);
    }
    const refusals_kind_t *kind = r->kind;
    memset(r, 0, sizeof *r);
    r->kind = kind;
    return counted;
}

void refusals_put_back(refusals_t *r, const refusals_t *summed)
{
    if (r->window_start_s == 0) {
        *r = *summed;
        return;
    }
    if (summed->window_start_s != 0 && summed->window_start_s < r->window_start_s)
        r->window_start_s = summed->window_start_s;
    r->counted += summed->counted;
    r->counted_elsewhere += summed->counted_elsewhere;
    for (size_t i = 0; i < summed->n_peers; i++) {
        if (summed->peers[i].counted == 0)
            continue;
        refusals_peer_t *p = refusals_peer(r, summed->peers[i].peer);
        if (p != NULL)
            p->counted += summed->peers[i].counted;
        else
            r->counted_elsewhere += summed->peers[i].counted;
    }
}
