// SPDX-License-Identifier: Apache-2.0
// 15 sessions at once, held by consumers of three uids (5 each, the per-uid
// limit), against a spindled process; a 16th session is refused with the
// total-limit error (consumer-port.md §2.1 step 20), and all 15 end
// cleanly. Lockdown mode set and cleared by configs refuses and then
// accepts producers of another uid. Needs root (setuid in the children);
// skipped otherwise.
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc_harness.h"

#define UIDS 3
#define PER_UID 5

static struct th_svc t;
static pid_t svc_pid;

static bool wait_socket(const char *path)
{
	struct stat st;

	for (int i = 0; i < 500; i++) {
		if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			return true;
		usleep(10000);
	}
	return false;
}

/* A child consumer process of uid `uid`: 5 sessions, report, wait, stop. */
static void child(uid_t uid, int report_fd, int stop_fd)
{
	struct th_cons c[PER_UID];
	char ok = 'k', go;

	/* Group root keeps access to the 0660 consumer socket. */
	if (setgroups(0, NULL) || setgid(0) || setuid(uid))
		_exit(3);
	for (int i = 0; i < PER_UID; i++) {
		th_cons_connect(&c[i], &t);
		th_cons_enable(&c[i], 256, "ds");
	}
	/* Let the enables land (a failure would have answered by now). */
	for (int i = 0; i < PER_UID; i++) {
		th_cons_wait_enable(&c[i], 200);
		if (c[i].enable_done)
			ok = 'x';
	}
	if (write(report_fd, &ok, 1) != 1 || read(stop_fd, &go, 1) != 1)
		_exit(4);
	for (int i = 0; i < PER_UID; i++) {
		if (th_cons_call(&c[i], "DisableTracing",
				 &perfetto__protos__disable_tracing_request__descriptor))
			_exit(5);
		th_cons_wait_enable(&c[i], 5000);
		if (!c[i].enable_done || c[i].enable_error[0])
			_exit(6);
		th_cons_close(&c[i]);
	}
	_exit(0);
}

static void test_fifteen_sessions(void **state)
{
	int report[2], stop[2];
	pid_t kids[UIDS];
	struct th_cons extra;
	(void)state;

	if (geteuid() != 0)
		skip();
	assert_int_equal(pipe(report), 0);
	assert_int_equal(pipe(stop), 0);
	for (int i = 0; i < UIDS; i++) {
		kids[i] = fork();
		if (kids[i] == 0)
			child(61000 + (uid_t)i, report[1], stop[0]);
	}
	for (int i = 0; i < UIDS; i++) {
		char r;

		assert_int_equal(read(report[0], &r, 1), 1);
		assert_int_equal(r, 'k');
	}
	/* uid 0 has no session, but the service has 15. */
	th_cons_connect(&extra, &t);
	th_cons_enable(&extra, 256, "ds");
	th_cons_wait_enable(&extra, 5000);
	assert_true(extra.enable_done);
	assert_string_equal(extra.enable_error,
			    "Too many concurrent tracing sesions (15)");
	th_cons_close(&extra);
	for (int i = 0; i < UIDS; i++)
		assert_int_equal(write(stop[1], "g", 1), 1);
	for (int i = 0; i < UIDS; i++) {
		int st;

		assert_int_equal(waitpid(kids[i], &st, 0), kids[i]);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
}

/* Enables (and at once disables) a session whose config applies op. */
static void lockdown(int op)
{
	Perfetto__Protos__TraceConfig cfg = PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig buf =
		PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig *bufs[] = { &buf };
	struct th_cons c;

	buf.has_size_kb = true;
	buf.size_kb = 64;
	cfg.n_buffers = 1;
	cfg.buffers = bufs;
	cfg.has_lockdown_mode = true;
	cfg.lockdown_mode = op;
	th_cons_connect(&c, &t);
	th_cons_enable_cfg(&c, &cfg);
	assert_int_equal(th_cons_call(&c, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(&c, 5000);
	assert_true(c.enable_done);
	th_cons_close(&c);
}

/* A producer of another uid: 0 accepted, 1 refused (in a child). */
static int foreign_producer(uid_t uid)
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		struct th_prod p;
		int used;

		if (setgroups(0, NULL) || setgid(0) || setuid(uid))
			_exit(3);
		used = th_prod_connect_ex(&p, &t, "foreign", "ds",
					  &(struct th_prod_opts){ .provided_fd = -1 });
		_exit(used < 0 ? 1 : 0);
	}
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Lockdown mode (step 1): set by a config, producers of other uids are
 * refused at InitializeConnection until a config clears it. */
static void test_lockdown(void **state)
{
	struct th_prod mine;
	(void)state;

	if (geteuid() != 0)
		skip();
	assert_int_equal(foreign_producer(61100), 0);
	lockdown(PERFETTO__PROTOS__TRACE_CONFIG__LOCKDOWN_MODE_OPERATION__LOCKDOWN_SET);
	assert_int_equal(foreign_producer(61100), 1);
	/* The service's own uid is still welcome. */
	assert_true(th_prod_connect_ex(&mine, &t, "mine", "ds",
				       &(struct th_prod_opts){ .provided_fd = -1 }) >= 0);
	th_prod_close(&mine);
	lockdown(PERFETTO__PROTOS__TRACE_CONFIG__LOCKDOWN_MODE_OPERATION__LOCKDOWN_CLEAR);
	assert_int_equal(foreign_producer(61100), 0);
}

static int setup(void **state)
{
	(void)state;
	strcpy(t.dir, "/tmp/spn_uids_XXXXXX");
	if (!mkdtemp(t.dir))
		return -1;
	chmod(t.dir, 0755);
	snprintf(t.psock, sizeof(t.psock), "%s/p.sock", t.dir);
	snprintf(t.csock, sizeof(t.csock), "%s/c.sock", t.dir);
	svc_pid = fork();
	if (svc_pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 2);
		execl(SPINDLED_BIN, "spindled", "--producer-socket", t.psock,
		      "--consumer-socket", t.csock, "--lanes", "2", NULL);
		_exit(127);
	}
	return wait_socket(t.csock) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	kill(svc_pid, SIGTERM);
	waitpid(svc_pid, NULL, 0);
	rmdir(t.dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fifteen_sessions),
		cmocka_unit_test(test_lockdown),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
