/*
 * fuzz_policy.c — libFuzzer harness for the policy loader (policy_load_buffer),
 * the parser of the file that decides who sees what. Input is loaded from
 * memory with no base folder, so key_file entries are refused and nothing
 * is opened. A refusal must carry a "fuzz:" message; a policy that loads is
 * queried (lookups, one decision per principal, recipients per grant).
 * Crashes, sanitizer reports and leaks are the findings.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "syntax.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_policy_exercise(const policy_t *policy)
{
    size_t n_themes = 0;
    while (syntax_themes[n_themes] != NULL)
        n_themes++;
    for (size_t i = 0; i < policy_rule_count(policy); i++)
        if (strlen(policy_rule_at(policy, i)->hash_hex) != 64)
            abort();
    size_t n = policy_principal_count(policy);
    for (size_t i = 0; i < n && i < 16; i++) {
        const policy_principal_t *sender = policy_principal_at(policy, i);
        if (policy_principal_by_id(policy, sender->id) != sender ||
            policy_principal_by_curve_key(policy, sender->curve_pk) != sender)
            abort(); /* ids and keys are unique, so lookups find exactly this one */
        policy_signal_facts_t facts = {.kind = "melding",
                                       .theme = syntax_themes[i % n_themes],
                                       .area = "WK093501",
                                       .has_case_ref = (int)(i & 1)};
        policy_decision_t decision;
        verdict_t verdict = policy_decide_signal(policy, sender, &facts, &decision);
        if (verdict != decision.verdict || (verdict == VERDICT_DENY && decision.n_grants != 0))
            abort();
        for (size_t g = 0; g < decision.n_grants; g++) {
            const policy_principal_t *out[8];
            size_t got = policy_recipients(policy, decision.grants[g].rule,
                                           decision.grants[g].partner, out, 8);
            for (size_t k = 0; k < got; k++)
                if (out[k]->role == ROLE_OPERATOR)
                    abort(); /* operators never receive */
        }
    }
}

/* Case types: found again by id, each with its lead rule; a principal that
 * may open a case of a type leads it under that rule and receives it; an
 * operator never opens, acts for a lead or receives a case. */
static void fuzz_policy_case_types(const policy_t *policy)
{
    size_t n_principals = policy_principal_count(policy);
    for (size_t t = 0; t < policy_case_type_count(policy) && t < 16; t++) {
        const policy_case_type_t *type = policy_case_type_at(policy, t);
        char lead_id[80];
        if (type == NULL || policy_case_type_by_id(policy, type->id) != type ||
            strlen(type->hash_hex) != 64)
            abort(); /* type ids are unique, so the lookup finds exactly this one */
        snprintf(lead_id, sizeof lead_id, "%s.lead", type->id);
        const policy_case_member_rule_t *lead_rule = policy_case_member_rule_by_id(policy, lead_id);
        if (lead_rule == NULL || !lead_rule->is_lead || lead_rule->case_type != type ||
            !policy_case_member_sees(lead_rule, "text"))
            abort(); /* every type has its lead rule, which sees every field */
        for (size_t i = 0; i < n_principals && i < 16; i++) {
            const policy_principal_t *principal = policy_principal_at(policy, i);
            char reason[256];
            verdict_t may_open =
                policy_case_may_open(policy, type, principal, reason, sizeof reason);
            const policy_case_member_rule_t *membership =
                policy_case_membership(policy, type, principal->partner, principal->partner);
            if (principal->role == ROLE_OPERATOR &&
                (may_open != VERDICT_DENY ||
                 policy_case_may_act_for(policy, type, principal, principal->partner) !=
                     VERDICT_DENY ||
                 (membership != NULL && policy_case_member_reaches(policy, membership, principal))))
                abort(); /* operators never take part in cases */
            if (may_open != VERDICT_DENY &&
                (membership != lead_rule ||
                 !policy_case_member_reaches(policy, lead_rule, principal)))
                abort(); /* whoever may open a case leads it and receives it */
            if (membership != NULL &&
                policy_case_member_rule_by_id(policy, membership->id) != membership)
                abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "";
    policy_t *policy = policy_load_buffer("fuzz", data, size, NULL, err, sizeof err);
    if (policy == NULL) {
        if (strncmp(err, "fuzz:", 5) != 0 || memchr(err, 0, sizeof err) == NULL)
            abort(); /* every refusal names the input */
        return 0;
    }
    fuzz_policy_exercise(policy);
    fuzz_policy_case_types(policy);
    policy_destroy(&policy);
    return 0;
}
