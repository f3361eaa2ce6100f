/* bind_loopback.c - an LD_PRELOAD shim for the OCSP harness (tests/integration/ocsp.bash),
 * not part of certmaint.  `openssl ocsp -port N` (OpenSSL 3.0) takes a port number only and
 * binds the wildcard address, [::] dual-stack; the tests' servers listen on 127.0.0.1 only.
 * This bind() turns a wildcard address into the loopback one: 0.0.0.0 -> 127.0.0.1 and
 * [::] -> [::ffff:127.0.0.1] (a dual-stack socket bound there accepts IPv4 loopback
 * connections only).  Every other bind() is passed through unchanged.
 *
 *   cc -shared -fPIC -o bind_loopback.so bind_loopback.c -ldl
 *
 * (Not -pedantic: glibc declares bind() with a GNU transparent union for the address.)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;

    if (real_bind == NULL) {
        /* POSIX's way to take a function pointer from dlsym */
        *(void **)&real_bind = dlsym(RTLD_NEXT, "bind");
        if (real_bind == NULL) {
            errno = ENOSYS;
            return -1;
        }
    }
    if (addr != NULL && addr->sa_family == AF_INET && len >= (socklen_t)sizeof in4) {
        memcpy(&in4, addr, sizeof in4);
        if (in4.sin_addr.s_addr == htonl(INADDR_ANY)) {
            in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&in4, sizeof in4);
        }
    } else if (addr != NULL && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof in6) {
        memcpy(&in6, addr, sizeof in6);
        if (memcmp(&in6.sin6_addr, &in6addr_any, sizeof in6.sin6_addr) == 0) {
            static const unsigned char mapped_loopback[16] = { 0, 0, 0, 0, 0, 0, 0, 0,
                                                               0, 0, 0xff, 0xff, 127, 0, 0, 1 };
            memcpy(&in6.sin6_addr, mapped_loopback, sizeof mapped_loopback);
            return real_bind(fd, (const struct sockaddr *)&in6, sizeof in6);
        }
    }
    return real_bind(fd, addr, len);
}
