/*
 * fuzz_policy.c — libFuzzer harness for the policy loader (policy_load_buffer),
 * the parser of the file that decides who sees what. Input is loaded from
 * memory with no base folder, so key_file entries are refused and nothing
 * is opened. A refusal must carry a "fuzz:" message; a policy that loads is
 * queried (lookups, one decision per principal, recipients per grant).
 * Crashes, sanitizer reports and leaks are the findings.
 */
#include <stdint.h>
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
    policy_destroy(&policy);
    return 0;
}
