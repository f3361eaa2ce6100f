/* test_sdnotify.c - sd_notify over AF_UNIX datagrams: paths, abstract names,
 * failures, WATCHDOG_USEC.
 *
 * Also a listener for tests/integration/watchdog.sh (systemd's side of the
 * protocol, which no package here provides without systemd itself):
 *   test_sdnotify --listen SOCKET SECONDS
 * binds SOCKET (a path, or @abstract) and prints each datagram received
 * within SECONDS as one line "<elapsed seconds> <message, newlines as '|'>",
 * flushed at once. */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "sdnotify.h"

static char dir[256];

/* A bound datagram socket at name (path or @abstract), or -1. */
static int bind_dgram(const char *name)
{
    struct sockaddr_un a;
    size_t n = strlen(name);
    socklen_t len;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || n >= sizeof a.sun_path) {
        if (fd >= 0) close(fd);
        return -1;
    }
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, name, n);
    if (name[0] == '@') a.sun_path[0] = '\0';
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (name[0] == '@' ? 0 : 1));
    if (bind(fd, (struct sockaddr *)&a, len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Receive one datagram within ms into buf (NUL-terminated) -> its length, or -1. */
static ssize_t recv_within(int fd, char *buf, size_t cap, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;
    if (poll(&p, 1, ms) != 1) return -1;
    n = recv(fd, buf, cap - 1, 0);
    if (n >= 0) buf[n] = '\0';
    return n;
}

static void test_path_socket(void)
{
    char path[300], buf[256];
    struct cm_result res;
    int fd;
    snprintf(path, sizeof path, "%s/notify", dir);
    fd = bind_dgram(path);
    CHECK(fd >= 0);
    CHECK(cm_sdnotify_send(path, "READY=1\nSTATUS=up", 17, &res) == CM_OK);
    CHECK(recv_within(fd, buf, sizeof buf, 1000) == 17);
    CHECK_STR(buf, "READY=1\nSTATUS=up");
    close(fd);
    /* nobody listening any more: the path exists but refuses */
    CHECK(cm_sdnotify_send(path, "WATCHDOG=1", 10, &res) == CM_ERR);
    CHECK_STR(res.code, "ECONNREFUSED");
    unlink(path);
    CHECK(cm_sdnotify_send(path, "WATCHDOG=1", 10, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
    CHECK(strstr(res.message, path) != NULL); /* names where it tried */
}

static void test_abstract_socket(void)
{
    char name[64], buf[64];
    struct cm_result res;
    int fd;
    snprintf(name, sizeof name, "@certmaint-test-%ld", (long)getpid());
    fd = bind_dgram(name);
    CHECK(fd >= 0);
    CHECK(cm_sdnotify_send(name, "WATCHDOG=1", 10, &res) == CM_OK);
    CHECK(recv_within(fd, buf, sizeof buf, 1000) == 10);
    CHECK_STR(buf, "WATCHDOG=1");
    close(fd);
    CHECK(cm_sdnotify_send(name, "WATCHDOG=1", 10, &res) == CM_ERR);
    CHECK_STR(res.code, "ECONNREFUSED");
}

static void test_bad_names(void)
{
    struct cm_result res;
    char longname[200];
    CHECK(cm_sdnotify_send("", "READY=1", 7, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(cm_sdnotify_send("@", "READY=1", 7, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(cm_sdnotify_send("relative/path", "READY=1", 7, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    memset(longname, 'a', sizeof longname - 1);
    longname[0] = '/';
    longname[sizeof longname - 1] = '\0';
    CHECK(cm_sdnotify_send(longname, "READY=1", 7, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(cm_sdnotify_send(NULL, "READY=1", 7, &res) == CM_ERR);
}

static void test_watchdog_env(void)
{
    char pid[32];
    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
    CHECK(cm_sdnotify_watchdog_seconds() == 0);
    setenv("WATCHDOG_USEC", "3000000", 1);
    CHECK(cm_sdnotify_watchdog_seconds() == 3.0);
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    CHECK(cm_sdnotify_watchdog_seconds() == 3.0);
    setenv("WATCHDOG_PID", "1", 1); /* meant for another process */
    CHECK(cm_sdnotify_watchdog_seconds() == 0);
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "3s", 1);
    CHECK(cm_sdnotify_watchdog_seconds() == 0);
    setenv("WATCHDOG_USEC", "0", 1);
    CHECK(cm_sdnotify_watchdog_seconds() == 0);
    unsetenv("WATCHDOG_USEC");
}

/* The elapsed clock: fake with the fake clock, moved by advance, not by a jump. */
static void test_elapsed_clock(void)
{
    double e0;
    cm_clock_set_fake(1000);
    e0 = cm_clock_elapsed();
    cm_clock_advance(10);
    CHECK(cm_clock_now() == 1010 && cm_clock_elapsed() == e0 + 10);
    cm_clock_jump(-86400);
    CHECK(cm_clock_now() == 1010 - 86400 && cm_clock_elapsed() == e0 + 10);
    cm_clock_set_fake(5000); /* while fake: a step of the wall clock only */
    CHECK(cm_clock_now() == 5000 && cm_clock_elapsed() == e0 + 10);
    cm_clock_set_real();
    e0 = cm_clock_elapsed();
    CHECK(e0 > 0 && cm_clock_elapsed() >= e0);
}

static int listen_mode(const char *name, double seconds)
{
    char buf[4096];
    double t0 = cm_clock_monotonic(), left;
    int fd = bind_dgram(name);
    if (fd < 0) {
        fprintf(stderr, "test_sdnotify --listen: cannot bind %s: %s\n", name, strerror(errno));
        return 1;
    }
    printf("listening %s\n", name);
    fflush(stdout);
    while ((left = seconds - (cm_clock_monotonic() - t0)) > 0) {
        ssize_t n = recv_within(fd, buf, sizeof buf, (int)(left * 1000) + 1);
        ssize_t i;
        if (n < 0) continue;
        for (i = 0; i < n; i++)
            if (buf[i] == '\n') buf[i] = '|';
        printf("%.3f %s\n", cm_clock_monotonic() - t0, buf);
        fflush(stdout);
    }
    close(fd);
    if (name[0] != '@') unlink(name);
    return 0;
}

int main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    if (argc == 4 && strcmp(argv[1], "--listen") == 0) return listen_mode(argv[2], atof(argv[3]));
    snprintf(dir, sizeof dir, "%s/cm-test-sdnotify-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_path_socket();
    test_abstract_socket();
    test_bad_names();
    test_watchdog_env();
    test_elapsed_clock();
    rmdir(dir);
    return CHECK_DONE();
}
