/* listen.c - parse "HOST:PORT" and open a listening socket. */
#include "listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BACKLOG 511

static const char *errno_name(int e)
{
    switch (e) {
    case EADDRINUSE: return "EADDRINUSE";
    case EACCES: return "EACCES";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOMEM: return "ENOMEM";
    default: return "listen";
    }
}

/* host (without brackets) and port text of `addr`; CM_ERR when malformed. */
static int parse(const char *addr, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *h = addr, *colon;
    size_t hl, pl;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (!rb || rb[1] != ':') return CM_ERR;
        h = addr + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        if (!(colon = strrchr(addr, ':'))) return CM_ERR;
        hl = (size_t)(colon - addr);
        if (memchr(addr, ':', hl)) return CM_ERR; /* IPv6 needs brackets */
    }
    pl = strlen(colon + 1);
    if (hl >= hcap || pl == 0 || pl >= pcap || strspn(colon + 1, "0123456789") != pl) return CM_ERR;
    memcpy(port, colon + 1, pl + 1);
    if (atol(port) > 65535) return CM_ERR;
    memcpy(host, h, hl);
    host[hl] = '\0';
    if (strcmp(host, "localhost") == 0) snprintf(host, hcap, "127.0.0.1");
    else if (hl == 0 || strcmp(host, "*") == 0) snprintf(host, hcap, "0.0.0.0");
    return CM_OK;
}

int cm_listen_tcp(const char *addr, int *fd, int *port, struct cm_result *res)
{
    struct addrinfo hints, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[64], portbuf[8];
    int s = -1, one = 1, gai, e;

    *fd = -1;
    *port = 0;
    if (!addr || parse(addr, host, sizeof host, portbuf, sizeof portbuf) != CM_OK)
        return cm_fail(res, "invalid", "bad listen address \"%.80s\" (want HOST:PORT)",
                       addr ? addr : "");
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    if ((gai = getaddrinfo(host, portbuf, &hints, &ai)) != 0 || !ai)
        return cm_fail(res, "invalid", "bad listen address \"%.80s\": %s", addr,
                       gai ? gai_strerror(gai) : "no address");
    s = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        e = errno;
        freeaddrinfo(ai);
        return cm_fail(res, errno_name(e), "socket: %s", strerror(e));
    }
    if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(s, ai->ai_addr, ai->ai_addrlen) != 0 || listen(s, BACKLOG) != 0 ||
        getsockname(s, (struct sockaddr *)&ss, &sl) != 0) {
        e = errno;
        close(s);
        freeaddrinfo(ai);
        return cm_fail(res, errno_name(e), "cannot listen on %s: %s", addr, strerror(e));
    }
    freeaddrinfo(ai);
    *port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                     : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *fd = s;
    return CM_OK;
}
