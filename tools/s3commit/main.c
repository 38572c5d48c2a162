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
          "  s3commit --help | --version\n"
          "flags:\n"
          "  --config FILE         the JSON config (docs/config.md); check-config takes FILE\n"
          "                        as its operand too\n"
          "  --input stdin|unix:PATH   run: where commits come from (default stdin)\n"
          "  --expect-commits N    verify: exactly N commits on the chain (control records apart)\n"
          "  -h, --help            this text (also after a command: s3commit run --help)\n"
          "  -V, --version         prints \"s3commit VERSION\"\n"
          "exit codes: 0 ok, 1 failed (not durable / check failed), 2 bad usage or config\n",
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
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *input = "stdin";
    int64_t expect = -1;

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
    if (strcmp(cmd, "run") != 0 && strcmp(cmd, "check-config") != 0 && strcmp(cmd, "verify") != 0) {
        tool_error("unknown command '%s' (use run, check-config or verify; --help)", cmd);
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
    return cmd_verify(config, expect);
}
