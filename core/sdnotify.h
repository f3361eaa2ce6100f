/* sdnotify.h - the systemd notification protocol (sd_notify(3)), without
 * libsystemd: one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET.
 *
 * The socket is a path ("/run/systemd/notify") or, starting with '@', an
 * abstract name (the '@' becomes the leading NUL byte).  The message is
 * newline-separated assignments: "READY=1", "WATCHDOG=1", "STATUS=...",
 * "STOPPING=1".  Nothing here blocks: the socket is non-blocking, and a full
 * queue is reported, never waited for.
 */
#ifndef CM_SDNOTIFY_H
#define CM_SDNOTIFY_H

#include <stddef.h>

#include "result.h"

/* Send `msg` (len bytes) to the socket `socket_name` (a path or "@abstract").
 * Returns CM_OK, or CM_ERR with res filled: "invalid" for an empty or too long
 * name, "ENOENT"/"ECONNREFUSED"/"EAGAIN"/... (errno names) when it cannot be
 * delivered.  Owns nothing after it returns. */
int cm_sdnotify_send(const char *socket_name, const char *msg, size_t len, struct cm_result *res);

/* The watchdog interval systemd asks for, from $WATCHDOG_USEC (and
 * $WATCHDOG_PID, which must be this process when set), in seconds; 0 when no
 * watchdog is asked for or the values are malformed. */
double cm_sdnotify_watchdog_seconds(void);

#endif
