// SPDX-License-Identifier: Apache-2.0
// The spindle CLI's TraceConfig: read from -c (protobuf text with --txt,
// else binary; "-" is stdin) or built from the simple-mode flags
// (-t, -b, data source names).
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/spindle_cli.h"
#include "sdk/trace_config_text.h"

/* Largest config file accepted. */
#define CLI_MAX_CONFIG_BYTES (16u << 20)

/* Reads all of fd into a malloc()ed, NUL-terminated buffer. Returns the
 * length or -errno (-EFBIG past CLI_MAX_CONFIG_BYTES). */
static ssize_t cli_read_all(int fd, char **out)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap + 1);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n;

		if (len == cap) {
			char *nb;

			if (cap >= CLI_MAX_CONFIG_BYTES) {
				free(buf);
				return -EFBIG;
			}
			cap *= 2;
			nb = realloc(buf, cap + 1);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = -errno;

			free(buf);
			return err;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*out = buf;
	return (ssize_t)len;
}

/* Reads the -c file. Returns 0 or prints the error and returns
 * CLI_EXIT_FAIL. */
static int cli_read_config_file(const char *path, char **data, size_t *len)
{
	bool is_stdin = !strcmp(path, "-");
	int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0) {
		fprintf(stderr, "spindle: cannot open config %s: %s\n", path,
			strerror(errno));
		return CLI_EXIT_FAIL;
	}
	n = cli_read_all(fd, data);
	if (!is_stdin)
		close(fd);
	if (n < 0) {
		fprintf(stderr, "spindle: cannot read config %s: %s\n",
			is_stdin ? "from stdin" : path, strerror((int)-n));
		return CLI_EXIT_FAIL;
	}
	*len = (size_t)n;
	return 0;
}

static int cli_config_from_file(const struct cli_opts *o,
				Perfetto__Protos__TraceConfig **out)
{
	const char *name = strcmp(o->config_path, "-") ? o->config_path :
							   "<stdin>";
	char *data = NULL, err[256];
	size_t len = 0;
	int rc;

	rc = cli_read_config_file(o->config_path, &data, &len);
	if (rc)
		return rc;
	if (o->txt) {
		rc = spn_trace_config_parse_text(data, len, out, err,
						 sizeof(err));
		if (rc == -EINVAL)
			fprintf(stderr, "spindle: %s:%s\n", name, err);
		else if (rc)
			fprintf(stderr, "spindle: cannot parse %s: %s\n", name,
				strerror(-rc));
	} else {
		*out = perfetto__protos__trace_config__unpack(
			NULL, len, (const uint8_t *)data);
		rc = *out ? 0 : -EBADMSG;
		if (rc)
			fprintf(stderr,
				"spindle: %s is not a binary TraceConfig "
				"(use --txt for text format)\n",
				name);
	}
	free(data);
	return rc ? CLI_EXIT_FAIL : 0;
}

/* Simple mode: one ring buffer, the duration, one entry per name. The
 * message is built on the stack, packed and unpacked so that the caller
 * gets one heap message like the other paths. */
static int cli_config_simple(const struct cli_opts *o,
			     Perfetto__Protos__TraceConfig **out)
{
	Perfetto__Protos__TraceConfig cfg = PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig buf =
		PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig *bufs[1] = { &buf };
	Perfetto__Protos__TraceConfig__DataSource *ds = NULL, **dsp = NULL;
	Perfetto__Protos__DataSourceConfig *dsc = NULL;
	size_t n = (size_t)o->n_sources, len;
	uint8_t *bytes = NULL;
	int rc = CLI_EXIT_FAIL;

	buf.has_size_kb = true;
	buf.size_kb = o->has_buffer ? o->buffer_kb : CLI_DEFAULT_BUFFER_KB;
	buf.has_fill_policy = true;
	buf.fill_policy =
		PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__FILL_POLICY__RING_BUFFER;
	cfg.n_buffers = 1;
	cfg.buffers = bufs;
	cfg.has_duration_ms = true;
	cfg.duration_ms = o->has_duration ? o->duration_ms :
					    CLI_DEFAULT_DURATION_MS;
	if (n) {
		ds = calloc(n, sizeof(*ds));
		dsp = calloc(n, sizeof(*dsp));
		dsc = calloc(n, sizeof(*dsc));
		if (!ds || !dsp || !dsc)
			goto out;
	}
	for (size_t i = 0; i < n; i++) {
		perfetto__protos__trace_config__data_source__init(&ds[i]);
		perfetto__protos__data_source_config__init(&dsc[i]);
		dsc[i].name = o->sources[i];
		ds[i].config = &dsc[i];
		dsp[i] = &ds[i];
	}
	cfg.n_data_sources = n;
	cfg.data_sources = dsp;
	len = perfetto__protos__trace_config__get_packed_size(&cfg);
	bytes = malloc(len ? len : 1);
	if (!bytes)
		goto out;
	perfetto__protos__trace_config__pack(&cfg, bytes);
	*out = perfetto__protos__trace_config__unpack(NULL, len, bytes);
	if (*out)
		rc = 0;
out:
	if (rc)
		fprintf(stderr, "spindle: out of memory\n");
	free(bytes);
	free(ds);
	free(dsp);
	free(dsc);
	return rc;
}

int cli_load_config(const struct cli_opts *o,
		    Perfetto__Protos__TraceConfig **out)
{
	*out = NULL;
	return o->config_path ? cli_config_from_file(o, out) :
				cli_config_simple(o, out);
}
