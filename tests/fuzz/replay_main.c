/*
 * replay_main.c — runs a libFuzzer harness over stored inputs without
 * libFuzzer, so that `make test` replays the seed corpus and every kept
 * regression input with the ordinary compiler (and under ASan in
 * check-asan). Arguments are files or folders (not recursive); without one,
 * replay_fuzz_NAME reads tests/fuzz/corpus/NAME/. An input passes when the
 * harness returns; a crash or sanitizer report ends the run. Exit status 1
 * when a path cannot be read or no input was found.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Larger than any frame the codec accepts, so over-size inputs still
 * exercise the size check; corpus files are far smaller. */
#define REPLAY_MAX_INPUT (4u * 1024u * 1024u)

struct replay_counts {
    unsigned passed;
    unsigned failed;
};

/* Reads the file into a buffer of exactly its size, so that ASan sees any
 * read past the end of the input. */
static int replay_file(const char *path, struct replay_counts *counts)
{
    FILE *file = fopen(path, "rb");
    struct stat info;
    if (file == NULL || fstat(fileno(file), &info) != 0 || info.st_size < 0 ||
        (uintmax_t)info.st_size > REPLAY_MAX_INPUT) {
        fprintf(stderr, "replay: cannot read %s: %s\n", path,
                file == NULL ? strerror(errno) : "too large or not a file");
        if (file != NULL)
            fclose(file);
        counts->failed++;
        return -1;
    }
    size_t size = (size_t)info.st_size;
    uint8_t *data = malloc(size > 0 ? size : 1);
    size_t got = data != NULL ? fread(data, 1, size, file) : 0;
    fclose(file);
    if (data == NULL || got != size) {
        fprintf(stderr, "replay: short read of %s\n", path);
        free(data);
        counts->failed++;
        return -1;
    }
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    counts->passed++;
    return 0;
}

/* Every regular, non-hidden file of the folder, in name order so that a
 * run is reproducible. */
static int replay_folder(const char *folder, struct replay_counts *counts)
{
    struct dirent **entries = NULL;
    int n = scandir(folder, &entries, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: cannot list %s: %s\n", folder, strerror(errno));
        counts->failed++;
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat info;
        if (entries[i]->d_name[0] != '.' &&
            snprintf(path, sizeof path, "%s/%s", folder, entries[i]->d_name) < (int)sizeof path &&
            stat(path, &info) == 0 && S_ISREG(info.st_mode))
            replay_file(path, counts);
        free(entries[i]);
    }
    free(entries);
    return 0;
}

static void replay_path(const char *path, struct replay_counts *counts)
{
    struct stat info;
    if (stat(path, &info) == 0 && S_ISDIR(info.st_mode))
        replay_folder(path, counts);
    else
        replay_file(path, counts);
}

/* replay_fuzz_frame -> tests/fuzz/corpus/frame */
static int default_corpus(const char *program, char *out, size_t out_size)
{
    const char *base = strrchr(program, '/');
    base = base != NULL ? base + 1 : program;
    const char *prefix = "replay_fuzz_";
    if (strncmp(base, prefix, strlen(prefix)) != 0 || base[strlen(prefix)] == '\0')
        return -1;
    int n = snprintf(out, out_size, "tests/fuzz/corpus/%s", base + strlen(prefix));
    return n > 0 && (size_t)n < out_size ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct replay_counts counts = {0, 0};
    const char *name = argc > 0 ? argv[0] : "replay";
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            replay_path(argv[i], &counts);
    } else {
        char corpus[1024];
        if (argc < 1 || default_corpus(argv[0], corpus, sizeof corpus) < 0) {
            fprintf(stderr, "usage: replay_fuzz_NAME [FILE|FOLDER]...\n");
            return 2;
        }
        replay_path(corpus, &counts);
    }
    if (counts.passed + counts.failed == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        counts.failed = 1;
    }
    const char *base = strrchr(name, '/');
    printf("%s: %u passed, %u failed\n", base != NULL ? base + 1 : name, counts.passed,
           counts.failed);
    return counts.failed == 0 ? 0 : 1;
}
