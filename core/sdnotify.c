/* sdnotify.c - sd_notify over a plain AF_UNIX datagram socket. */
#include "sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char *errno_code(int e)
{
    switch (e) {
    case ENOENT: return "ENOENT";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EAGAIN: return "EAGAIN";
    case EACCES: return "EACCES";
    case ENOTDIR: return "ENOTDIR";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOBUFS: return "ENOBUFS";
    default: return "EIO";
    }
}

int cm_sdnotify_send(const char *socket_name, const char *msg, size_t len, struct cm_result *res)
{
    struct sockaddr_un addr;
    size_t name_len;
    socklen_t addr_len;
    ssize_t sent;
    int fd = -1, rc = CM_ERR, saved;

    if (!socket_name || !msg) return cm_fail(res, "invalid", "sd_notify: no socket name or message");
    name_len = strlen(socket_name);
    /* "@x" is abstract: at least one byte after '@'; a path must be absolute */
    if (name_len < 2 || (socket_name[0] != '/' && socket_name[0] != '@'))
        return cm_fail(res, "invalid", "sd_notify: NOTIFY_SOCKET '%s' is neither an absolute path nor @abstract",
                       socket_name);
    if (name_len >= sizeof addr.sun_path)
        return cm_fail(res, "invalid", "sd_notify: NOTIFY_SOCKET is %zu bytes, more than %zu", name_len,
                       sizeof addr.sun_path - 1);
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, socket_name, name_len);
    if (socket_name[0] == '@') addr.sun_path[0] = '\0';
    /* an abstract name is exactly its bytes (no trailing NUL); a path ends at its NUL */
    addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + name_len + (socket_name[0] == '@' ? 0 : 1));

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        saved = errno;
        return cm_fail(res, errno_code(saved), "sd_notify: socket: %s", strerror(saved));
    }
    sent = sendto(fd, msg, len, MSG_NOSIGNAL, (const struct sockaddr *)&addr, addr_len);
    if (sent < 0) {
        saved = errno;
        cm_fail(res, errno_code(saved), "sd_notify: sending to %s: %s", socket_name, strerror(saved));
        goto out;
    }
    if ((size_t)sent != len) {
        cm_fail(res, "EMSGSIZE", "sd_notify: sent %zd of %zu bytes to %s", sent, len, socket_name);
        goto out;
    }
    rc = CM_OK;
out:
    close(fd);
    return rc;
}

double cm_sdnotify_watchdog_seconds(void)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    char *end = NULL;
    unsigned long long us;
    if (!usec || !*usec) return 0;
    if (pid && *pid) {
        unsigned long long p;
        errno = 0;
        p = strtoull(pid, &end, 10);
        if (errno || *end || p != (unsigned long long)getpid()) return 0; /* meant for another process */
    }
    errno = 0;
    us = strtoull(usec, &end, 10);
    if (errno || *end || us == 0) return 0;
    return (double)us / 1e6;
}
