/* Service readiness for systemd's Type=notify, without libsystemd: one datagram to the
 * Unix socket named by $NOTIFY_SOCKET (sd_notify(3)). Program code only; never fails the
 * program, since without systemd there is nobody to tell. */
#ifndef S3C_SDNOTIFY_H
#define S3C_SDNOTIFY_H

/* Sends state ("READY=1", "STOPPING=1", "STATUS=...", newline-separated) when
 * $NOTIFY_SOCKET is set: a path, or '@' for the abstract namespace. Returns 1 when sent,
 * 0 when $NOTIFY_SOCKET is unset, or -errno. */
int sdnotify_send(const char *state);

#endif
