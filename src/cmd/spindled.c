// SPDX-License-Identifier: Apache-2.0
// spindled: the tracing service's command line (flags, signals) over
// src/core/service.h.
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/service.h"
#include "ipc/log.h"
#include "ipc/sockname.h"

#define SPINDLED_VERSION "0.1.0"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: spindled [options]\n"
		"  --producer-socket PATH  producer socket (default: "
		"$PERFETTO_PRODUCER_SOCK_NAME, then Perfetto's paths)\n"
		"  --consumer-socket PATH  consumer socket (default: "
		"$PERFETTO_CONSUMER_SOCK_NAME, then Perfetto's paths)\n"
		"  --lanes N               data-plane lanes (default: cores, "
		"at most 16)\n"
		"  --control N             control-plane threads (default 2)\n"
		"  --log-level LEVEL       error, warn, info (default) or debug\n"
		"  --version               print the version\n"
		"  --help                  this text\n");
}

/*
 * Refuses a socket path another live service listens on, or that is not a
 * socket at all; a stale socket (nobody listening) is replaced when the
 * service binds. Abstract names (@...) have no file. Returns 0 or -1.
 */
static int check_socket_path(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, rc;

	if (path[0] == '@' || lstat(path, &st) != 0)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		fprintf(stderr, "spindled: %s exists and is not a socket; "
				"not replacing it\n", path);
		return -1;
	}
	if (strlen(path) >= sizeof(sa.sun_path))
		return 0; /* svc_start reports the length */
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	if (rc == 0) {
		fprintf(stderr, "spindled: another service is listening on %s\n",
			path);
		return -1;
	}
	return 0;
}

/* Parses a count in 1..max; -1 when invalid. */
static long parse_count(const char *s, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 1 || v > max)
		return -1;
	return v;
}

static int parse_level(const char *s)
{
	static const char *names[] = { "error", "warn", "info", "debug" };

	for (int i = 0; i < 4; i++)
		if (!strcmp(s, names[i]))
			return i;
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "producer-socket", required_argument, NULL, 'p' },
		{ "consumer-socket", required_argument, NULL, 'c' },
		{ "lanes", required_argument, NULL, 'l' },
		{ "control", required_argument, NULL, 'C' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct svc_opts so = { 0 };
	char pbuf[4096], cbuf[4096];
	struct svc *svc;
	sigset_t set;
	int c, sig, rc, level = SPN_LOG_INFO;
	long v;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			so.producer_socket = optarg;
			break;
		case 'c':
			so.consumer_socket = optarg;
			break;
		case 'l':
		case 'C':
			v = parse_count(optarg, c == 'l' ? 64 : 16);
			if (v < 0) {
				fprintf(stderr, "spindled: bad --%s value '%s'\n",
					c == 'l' ? "lanes" : "control", optarg);
				return 2;
			}
			if (c == 'l')
				so.lanes = (unsigned)v;
			else
				so.control = (unsigned)v;
			break;
		case 'L':
			level = parse_level(optarg);
			if (level < 0) {
				fprintf(stderr, "spindled: bad --log-level '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'V':
			printf("spindled %s\n", SPINDLED_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "spindled: unexpected argument '%s'\n",
			argv[optind]);
		return 2;
	}
	if (!so.producer_socket)
		so.producer_socket = ipc_default_socket(true, pbuf, sizeof(pbuf));
	if (!so.consumer_socket)
		so.consumer_socket = ipc_default_socket(false, cbuf, sizeof(cbuf));
	if (check_socket_path(so.producer_socket) < 0 ||
	    check_socket_path(so.consumer_socket) < 0)
		return 1;
	spn_log_init();
	spn_log_set_level(level);
	/* Signals are taken by sigwait below, on this thread only. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	rc = svc_start(&so, &svc);
	if (rc < 0) {
		fprintf(stderr, "spindled: cannot start: %s\n", strerror(-rc));
		return 1;
	}
	sigwait(&set, &sig);
	spn_log_info("spindled", "%s: stopping", strsignal(sig));
	svc_stop(svc);
	return 0;
}
