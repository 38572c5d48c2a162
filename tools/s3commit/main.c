/* s3commit: run the stage as a process, check a config, verify what is stored. Parses
 * the command line and dispatches; it never guesses a missing argument. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3commit.h"
#include "s3commit_cli.h"
#include "tool.h"

static void cli_usage(FILE *f)
{
    fputs("usage:\n"
          "  s3commit run --config FILE [--input stdin|unix:PATH]\n"
          "      commits framed as u32 little-endian length + bytes on stdin (or from each\n"
          "      client of a Unix socket); prints {\"durable_seq\":N} as the watermark moves;\n"
          "      SIGTERM/SIGINT or end of input: drain, then exit. Under systemd\n"
          "      (Type=notify) it sends READY=1 to $NOTIFY_SOCKET once it takes commits\n"
          "  s3commit check-config FILE\n"
          "      validates FILE and prints the effective config (defaults filled, secrets\n"
          "      masked); exit 0, or 2 with one message naming the key\n"
          "  s3commit verify --config FILE [--expect-commits N]\n"
          "      reads every object under s3.prefix back and checks format, CRCs, keys and\n"
          "      seq continuity from 1; prints a JSON summary; exit 0 only if all holds\n"
          "  s3commit cat --config FILE [--from-seq N] [--to-seq M] [--follow] [--control]\n"
          "      writes the log's commits on stdout in run's framing (u32 LE length + bytes),\n"
          "      in seq order, each once, CRC-checked; --follow waits for more at the end;\n"
          "      --control prints control records as JSON lines on stderr; exit 0 at the end\n"
          "      (or when the reader of stdout goes away), 1 on an error naming the key\n"
          "  s3commit --help | --version\n"
          "flags:\n"
          "  --config FILE         the JSON config (docs/config.md); check-config takes FILE\n"
          "                        as its operand too\n"
          "  --input stdin|unix:PATH   run: where commits come from (default stdin)\n"
          "  --expect-commits N    verify: exactly N commits on the chain (control records\n"
          "                        not counted)\n"
          "  --from-seq N          cat: start at seq N (default: the start of the log)\n"
          "  --to-seq M            cat: stop after seq M (default: the end)\n"
          "  --follow              cat: at the end of the log, wait for more commits\n"
          "  --poll-ms N           cat --follow: look for more every N ms (default 500)\n"
          "  --control             cat: also print control records (JSON lines, stderr)\n"
          "  -h, --help            this text (also after a command: s3commit run --help)\n"
          "  -V, --version         prints \"s3commit VERSION\"\n"
          "exit codes: 0 ok, 1 failed (not durable / check failed), 2 bad usage or config,\n"
          "  3 run was fenced (a newer writer owns the log), 4 run refused to start until a\n"
          "  person acts (a spool the log disagrees with, a damaged object, another format)\n",
          f);
}

static int print_version(void)
{
    printf("s3commit %s\n", s3c_version());
    return TOOL_EXIT_OK;
}

int cmd_check_config(const char *config_path)
{
    s3c_config *cfg = NULL;
    if (tool_config_load(config_path, &cfg) != 0)
        return TOOL_EXIT_USAGE;
    char *dump = s3c_config_dump(cfg);
    s3c_config_free(cfg);
    if (!dump) {
        tool_error("out of memory");
        return TOOL_EXIT_FAIL;
    }
    fputs(dump, stdout);
    if (dump[0] && dump[strlen(dump) - 1] != '\n')
        fputc('\n', stdout);
    free(dump);
    return TOOL_EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"input", required_argument, NULL, 'i'},
        {"expect-commits", required_argument, NULL, 'e'},
        {"from-seq", required_argument, NULL, 'f'},
        {"to-seq", required_argument, NULL, 't'},
        {"follow", no_argument, NULL, 'F'},
        {"control", no_argument, NULL, 'C'},
        {"poll-ms", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *input = "stdin";
    int64_t expect = -1;
    struct cat_args cat = {0};

    tool_set_name("s3commit");
    if (argc < 2) {
        cli_usage(stderr);
        return TOOL_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        cli_usage(stdout);
        return TOOL_EXIT_OK;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0)
        return print_version();
    if (strcmp(cmd, "run") != 0 && strcmp(cmd, "check-config") != 0 && strcmp(cmd, "verify") != 0 &&
        strcmp(cmd, "cat") != 0) {
        tool_error("unknown command '%s' (use run, check-config, verify or cat; --help)", cmd);
        return TOOL_EXIT_USAGE;
    }
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'i':
            input = optarg;
            break;
        case 'e': {
            uint64_t v;
            if (!tool_parse_size(optarg, &v) || v > INT64_MAX) {
                tool_error("--expect-commits %s: expected a non-negative integer", optarg);
                return TOOL_EXIT_USAGE;
            }
            expect = (int64_t)v;
            break;
        }
        case 'f':
        case 't':
        case 'p': {
            uint64_t v;
            if (!tool_parse_size(optarg, &v) || (c == 'p' && (v == 0 || v > 3600000))) {
                tool_error("--%s %s: expected a %s integer",
                           c == 'f'   ? "from-seq"
                           : c == 't' ? "to-seq"
                                      : "poll-ms",
                           optarg, c == 'p' ? "positive (at most 3600000)" : "non-negative");
                return TOOL_EXIT_USAGE;
            }
            if (c == 'f')
                cat.from_seq = v;
            else if (c == 't')
                cat.to_seq = v;
            else
                cat.poll_interval_ms = (int)v;
            break;
        }
        case 'F':
            cat.follow = true;
            break;
        case 'C':
            cat.control = true;
            break;
        case 'h':
            cli_usage(stdout);
            return TOOL_EXIT_OK;
        case 'V':
            return print_version();
        default:
            cli_usage(stderr);
            return TOOL_EXIT_USAGE;
        }
    }
    /* check-config takes the file as its operand; --config works too. */
    if (!config && optind < argc)
        config = argv[optind++];
    if (optind < argc) {
        tool_error("%s: unexpected argument '%s'", cmd, argv[optind]);
        return TOOL_EXIT_USAGE;
    }
    if (!config) {
        tool_error("%s needs a config file (--config FILE)", cmd);
        return TOOL_EXIT_USAGE;
    }
    if (strcmp(cmd, "run") == 0)
        return cmd_run(config, input);
    if (strcmp(cmd, "check-config") == 0)
        return cmd_check_config(config);
    if (strcmp(cmd, "cat") == 0) {
        if (cat.to_seq && cat.from_seq > cat.to_seq) {
            tool_error("cat: --from-seq %llu is past --to-seq %llu",
                       (unsigned long long)cat.from_seq, (unsigned long long)cat.to_seq);
            return TOOL_EXIT_USAGE;
        }
        return cmd_cat(config, &cat);
    }
    return cmd_verify(config, expect);
}
