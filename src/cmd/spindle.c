// SPDX-License-Identifier: Apache-2.0
// spindle: the consumer command line (perfetto-compatible flags): parses
// the flags, loads the config, connects to the ConsumerPort (or, to
// activate triggers, the ProducerPort) and runs one mode. Bad usage is one
// line on stderr and exit status 2.
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/spindle_cli.h"

#define SPINDLE_VERSION "0.1.0"

static void cli_usage(FILE *f)
{
	fprintf(f,
		"usage: spindle [options] [DATA_SOURCE...]\n"
		"Records a trace through spindled or Perfetto's traced.\n"
		"  -c, --config FILE     TraceConfig file (- = stdin); binary "
		"unless --txt\n"
		"      --txt             the config is protobuf text format\n"
		"  -o, --out FILE        trace output (- = stdout)\n"
		"simple mode (no -c):\n"
		"  -t, --time DURATION   N[ms|s|m|h] (default 10s; 0 = until "
		"Ctrl-C)\n"
		"  -b, --buffer SIZE     N[kb|mb|gb] (default 32mb; plain N: "
		"KiB)\n"
		"  DATA_SOURCE...        data source names to enable\n"
		"sessions:\n"
		"      --detach=KEY      start, detach as KEY and exit\n"
		"      --attach=KEY      re-attach, wait for the end, save the "
		"trace\n"
		"      --stop            with --attach: stop the session now\n"
		"      --is_detached=KEY exit 0 if KEY is detached, 2 if not\n"
		"      --clone=ID        clone session ID into -o\n"
		"      --query           producers, data sources, sessions\n"
		"      --query-raw       the service state as text proto\n"
		"triggers:\n"
		"      --trigger NAME    activate trigger NAME (repeatable) as a "
		"producer,\n"
		"                        wait until the service processed it, "
		"exit 0\n"
		"                        (a -c config with activate_triggers does "
		"the same)\n"
		"other:\n"
		"      --consumer-socket PATH  service socket (default: "
		"$PERFETTO_CONSUMER_SOCK_NAME, then perfetto's)\n"
		"      --producer-socket PATH  producer socket for triggers "
		"(default:\n"
		"                        $PERFETTO_PRODUCER_SOCK_NAME, then "
		"perfetto's)\n"
		"  -h, --help            this text\n"
		"      --version         print the version\n");
}

/* Prints a one-line usage error; returns CLI_EXIT_USAGE. */
__attribute__((format(printf, 1, 2))) static int cli_bad(const char *fmt,
							 ...)
{
	va_list ap;

	fputs("spindle: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see --help)\n", stderr);
	return CLI_EXIT_USAGE;
}

/* Long-only option ids. */
enum {
	OPT_TXT = 256, OPT_DETACH, OPT_ATTACH, OPT_IS_DETACHED, /* in order */
	OPT_STOP, OPT_QUERY, OPT_QUERY_RAW, OPT_CLONE, OPT_SOCKET, OPT_VERSION,
	OPT_TRIGGER, OPT_PRODUCER_SOCKET,
};

/* Selects a mode; only one mode flag may be given. */
static int cli_set_mode(struct cli_opts *o, enum cli_mode m, const char **flag,
			const char *name)
{
	if (*flag)
		return cli_bad("%s cannot be combined with %s", name, *flag);
	*flag = name;
	o->mode = m;
	return 0;
}

/* Handles one option with a value. Returns 0 or CLI_EXIT_USAGE. */
static int cli_opt_value(struct cli_opts *o, int c, const char *arg,
			 const char **mode_flag)
{
	switch (c) {
	case 'c':
		o->config_path = arg;
		return 0;
	case 'o':
		o->out_path = arg;
		return 0;
	case 't':
		o->has_duration = true;
		if (cli_parse_duration(arg, &o->duration_ms))
			return cli_bad("bad -t value '%s': expected "
				       "N[ms|s|m|h]", arg);
		return 0;
	case 'b':
		o->has_buffer = true;
		if (cli_parse_size_kb(arg, &o->buffer_kb))
			return cli_bad("bad -b value '%s': expected "
				       "N[kb|mb|gb], 1kb to 4095mb", arg);
		return 0;
	case OPT_DETACH:
	case OPT_ATTACH:
	case OPT_IS_DETACHED: {
		static const struct {
			enum cli_mode mode;	/* mode it selects */
			const char *name;	/* flag, for messages */
		} keyed[] = {
			{ CLI_DETACH, "--detach" },
			{ CLI_ATTACH, "--attach" },
			{ CLI_IS_DETACHED, "--is_detached" },
		};
		int k = c - OPT_DETACH;

		if (!*arg)
			return cli_bad("%s needs a non-empty KEY",
				       keyed[k].name);
		o->key = arg;
		return cli_set_mode(o, keyed[k].mode, mode_flag, keyed[k].name);
	}
	case OPT_CLONE:
		if (cli_parse_u64(arg, &o->clone_id))
			return cli_bad("bad --clone value '%s': expected a "
				       "session id", arg);
		return cli_set_mode(o, CLI_CLONE, mode_flag, "--clone");
	case OPT_SOCKET:
		o->socket = arg;
		return 0;
	case OPT_PRODUCER_SOCKET:
		o->producer_socket = arg;
		return 0;
	case OPT_TRIGGER:
		if (!*arg)
			return cli_bad("--trigger needs a non-empty NAME");
		if (o->n_triggers == CLI_MAX_TRIGGERS)
			return cli_bad("at most %d --trigger flags", CLI_MAX_TRIGGERS);
		o->triggers[o->n_triggers++] = (char *)arg;
		/* Repeatable: only the first selects the mode. */
		return o->n_triggers > 1 ? 0 :
					   cli_set_mode(o, CLI_TRIGGER, mode_flag,
							"--trigger");
	}
	return cli_bad("internal: unhandled option %d", c);
}

/* Reports a getopt failure ('?' or ':'). */
static int cli_opt_error(int c, char **argv)
{
	const char *opt = argv[optind - 1];
	char shortopt[3] = { '-', (char)optopt, '\0' };

	if (optopt && strncmp(opt, "--", 2))
		opt = shortopt;
	if (c == ':')
		return cli_bad("option '%s' needs a value", opt);
	return cli_bad("unknown or malformed option '%s'", opt);
}

/* Parses argv into *o. Returns 0, CLI_EXIT_USAGE, or -1 for --help /
 * --version (already printed: exit 0). */
static int cli_parse_args(int argc, char **argv, struct cli_opts *o)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "txt", no_argument, NULL, OPT_TXT },
		{ "out", required_argument, NULL, 'o' },
		{ "time", required_argument, NULL, 't' },
		{ "buffer", required_argument, NULL, 'b' },
		{ "detach", required_argument, NULL, OPT_DETACH },
		{ "attach", required_argument, NULL, OPT_ATTACH },
		{ "stop", no_argument, NULL, OPT_STOP },
		{ "is_detached", required_argument, NULL, OPT_IS_DETACHED },
		{ "query", no_argument, NULL, OPT_QUERY },
		{ "query-raw", no_argument, NULL, OPT_QUERY_RAW },
		{ "clone", required_argument, NULL, OPT_CLONE },
		{ "consumer-socket", required_argument, NULL, OPT_SOCKET },
		{ "producer-socket", required_argument, NULL, OPT_PRODUCER_SOCKET },
		{ "trigger", required_argument, NULL, OPT_TRIGGER },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	const char *mode_flag = NULL;
	int c, rc;

	memset(o, 0, sizeof(*o));
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":c:o:t:b:h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_TXT:
			o->txt = true;
			break;
		case OPT_STOP:
			o->stop = true;
			break;
		case OPT_QUERY:
		case OPT_QUERY_RAW:
			rc = cli_set_mode(o, c == OPT_QUERY ? CLI_QUERY :
							      CLI_QUERY_RAW,
					  &mode_flag,
					  c == OPT_QUERY ? "--query" :
							   "--query-raw");
			if (rc)
				return rc;
			break;
		case 'h':
			cli_usage(stdout);
			return -1;
		case OPT_VERSION:
			printf("spindle %s\n", SPINDLE_VERSION);
			return -1;
		case '?':
		case ':':
			return cli_opt_error(c, argv);
		default:
			rc = cli_opt_value(o, c, optarg, &mode_flag);
			if (rc)
				return rc;
			break;
		}
	}
	o->sources = argv + optind;
	o->n_sources = argc - optind;
	return 0;
}

/* Checks the combinations. Returns 0 or CLI_EXIT_USAGE. */
static int cli_check_args(const struct cli_opts *o)
{
	bool simple = o->has_duration || o->has_buffer || o->n_sources;
	bool records = o->mode == CLI_RECORD || o->mode == CLI_DETACH;

	for (int i = 0; i < o->n_sources; i++)
		if (!*o->sources[i])
			return cli_bad("empty data source name");
	if (!records && (o->config_path || simple))
		return cli_bad("-c, -t, -b and data sources do not apply "
			       "to this mode");
	if (o->config_path && simple)
		return cli_bad("-c cannot be combined with -t, -b or data "
			       "source names");
	if (o->txt && !o->config_path)
		return cli_bad("--txt needs -c FILE");
	if (o->stop && o->mode != CLI_ATTACH)
		return cli_bad("--stop needs --attach=KEY");
	if (o->out_path && (o->mode == CLI_QUERY || o->mode == CLI_QUERY_RAW ||
			    o->mode == CLI_IS_DETACHED))
		return cli_bad("-o does not apply to this mode");
	if (o->mode == CLI_CLONE && !o->out_path)
		return cli_bad("--clone needs -o FILE");
	if (o->mode == CLI_TRIGGER && (o->out_path || o->txt))
		return cli_bad("-o and --txt do not apply to --trigger");
	if (o->socket && o->mode == CLI_TRIGGER)
		return cli_bad("--trigger uses the producer socket: give "
			       "--producer-socket");
	return 0;
}

/* Runs the selected mode on a connected port. */
static int cli_run(const struct cli_opts *o, struct cli_conn *c,
		   Perfetto__Protos__TraceConfig *cfg)
{
	switch (o->mode) {
	case CLI_RECORD:
		return cli_record(o, c, cfg);
	case CLI_DETACH:
		return cli_detach(o, c, cfg);
	case CLI_ATTACH:
		return cli_attach(o, c);
	case CLI_IS_DETACHED:
		return cli_is_detached(o, c);
	case CLI_QUERY:
	case CLI_QUERY_RAW:
		return cli_query(o, c);
	case CLI_CLONE:
		return cli_clone(o, c);
	case CLI_TRIGGER:
		break; /* no consumer connection: see main */
	}
	return CLI_EXIT_FAIL;
}

int main(int argc, char **argv)
{
	Perfetto__Protos__TraceConfig *cfg = NULL;
	struct cli_opts o;
	struct cli_conn c;
	char namebuf[4096];
	int rc = cli_parse_args(argc, argv, &o);

	if (rc)
		return rc < 0 ? CLI_EXIT_OK : rc;
	rc = cli_check_args(&o);
	if (rc)
		return rc;
	if (o.mode == CLI_TRIGGER)
		return cli_trigger(&o, o.triggers, o.n_triggers);
	if (o.mode == CLI_RECORD || o.mode == CLI_DETACH) {
		rc = cli_load_config(&o, &cfg);
		if (rc)
			return rc;
	}
	if (cfg && cfg->n_activate_triggers) {
		/* A trigger config starts no session (perfetto's rule). */
		rc = o.mode == CLI_DETACH ?
			     cli_bad("a config with activate_triggers starts no "
				     "session: --detach does not apply") :
			     cli_trigger(&o, cfg->activate_triggers,
					 cfg->n_activate_triggers);
		perfetto__protos__trace_config__free_unpacked(cfg, NULL);
		return rc;
	}
	rc = cli_connect(&o, &c, namebuf, sizeof(namebuf));
	if (!rc) {
		rc = cli_run(&o, &c, cfg);
		cli_disconnect(&c);
	}
	if (cfg)
		perfetto__protos__trace_config__free_unpacked(cfg, NULL);
	return rc;
}
