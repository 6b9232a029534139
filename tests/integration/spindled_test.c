// SPDX-License-Identifier: Apache-2.0
// The spindled command: flags (bad values exit 2), --version, socket modes
// (0666 producers, 0660 consumers), a stale socket file replaced, a live
// service or a non-socket file never replaced, and SIGTERM stopping it.
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[64], psock[128], csock[128];

/* Runs spindled with args; returns its pid (stdout/stderr to /dev/null). */
static pid_t start(char *const argv[])
{
	pid_t pid = fork();

	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(null, 2);
		execv(SPINDLED_BIN, argv);
		_exit(127);
	}
	return pid;
}

static int run(char *const argv[])
{
	int st;

	waitpid(start(argv), &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

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

static int setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/spn_spindled_XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(psock, sizeof(psock), "%s/p.sock", dir);
	snprintf(csock, sizeof(csock), "%s/c.sock", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(psock);
	unlink(csock);
	rmdir(dir);
	return 0;
}

static void test_bad_flags(void **state)
{
	char *bad[][4] = {
		{ "spindled", "--lanes", "0", NULL },
		{ "spindled", "--lanes", "x", NULL },
		{ "spindled", "--control", "99", NULL },
		{ "spindled", "--log-level", "loud", NULL },
		{ "spindled", "--nope", NULL, NULL },
		{ "spindled", "extra", NULL, NULL },
	};
	char *ver[] = { "spindled", "--version", NULL };
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(run(bad[i]), 2);
	assert_int_equal(run(ver), 0);
}

static void test_modes_stale_and_sigterm(void **state)
{
	char *argv[] = { "spindled", "--producer-socket", psock,
			 "--consumer-socket", csock, "--lanes", "2", NULL };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	pid_t pid;
	int fd, status;
	(void)state;

	/* A stale socket file: bound, then its listener gone. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(sa.sun_path, psock);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	pid = start(argv);
	assert_true(wait_socket(csock));
	assert_int_equal(stat(psock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0666);
	assert_int_equal(stat(csock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
	/* A second service must not steal the live sockets. */
	assert_int_equal(run(argv), 1);
	kill(pid, SIGTERM);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* Clean stop: the socket files are gone. */
	assert_int_not_equal(stat(psock, &st), 0);
}

static void test_non_socket_file_kept(void **state)
{
	char *argv[] = { "spindled", "--producer-socket", psock,
			 "--consumer-socket", csock, NULL };
	struct stat st;
	int fd;
	(void)state;

	fd = open(psock, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(run(argv), 1);
	assert_int_equal(stat(psock, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	unlink(psock);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_flags),
		cmocka_unit_test_setup_teardown(test_modes_stale_and_sigterm,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_non_socket_file_kept,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
