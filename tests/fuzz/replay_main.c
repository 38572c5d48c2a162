/* Runs fuzz inputs without libFuzzer (gcc builds, CTest): every file named on the command
 * line, or every file in the directories named, through LLVMFuzzerTestOneInput. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return 1;
    }
    unsigned char *buf = malloc(1 << 16);
    size_t n = fread(buf, 1, 1 << 16, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, rc = 0;
#ifdef FUZZ_CORPUS_DIR
    char *dflt[] = {argv[0], FUZZ_CORPUS_DIR, NULL};
    if (argc < 2) {
        argc = 2;
        argv = dflt;
    }
#endif
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            DIR *d = opendir(argv[i]);
            struct dirent *e;
            while (d && (e = readdir(d))) {
                if (e->d_name[0] == '.')
                    continue;
                char path[4096];
                snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
                rc |= run_file(path);
                files++;
            }
            if (d)
                closedir(d);
        } else {
            rc |= run_file(argv[i]);
            files++;
        }
    }
    fprintf(stderr, "replay: %d inputs\n", files);
    return rc || files == 0;
}
