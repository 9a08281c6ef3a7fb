/*
 * ciw-idle: what an idle sandbox's supervisor becomes (see ciw_supervisor.Supervisor.hibernate).
 *
 * The Python supervisor is needed only while it serves a request, yet as a second Python process beside the
 * kernel it is most of an idle sandbox's memory. After a while without requests it exec()s this program:
 * same pid, same descriptors (0: the service's requests, 1: replies to the service, 3: the kernel's
 * channel), so the kernel stays its child. This program
 *   - waits for the next request on fd 0, then exec()s the supervisor again (argv[2..]) with
 *     "--resume <kernel pid>" appended: the request is still unread and the new supervisor reads it;
 *   - reaps every child that ends meanwhile (the kernel, and orphans when it is the sandbox's pid 1), and
 *     when the kernel ends tells the service, as the supervisor would have:
 *     {"notice": "kernel_exit", "status": N} (N: exit code, or minus the signal number).
 * It writes nothing else, allocates nothing while it waits, and is not dumpable (code in the sandbox runs as the same uid
 * and must not reach its descriptors through /proc or ptrace).
 *
 * A sandbox that outlives the service (CIW_LIFELINE_FD: the read end of a FIFO only the service writes to)
 * waits CIW_ORPHAN_MS for a new service process once the last one went away, then ends: this program exits,
 * and with it, the sandbox's pid 1, the whole sandbox.
 *
 * usage: ciw-idle KERNEL_PID PROGRAM [ARG...]    (KERNEL_PID 0: no kernel)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* 1 while no service process holds the lifeline's write end (it hung up). */
static int orphaned(int lifeline) {
    struct pollfd p = { .fd = lifeline, .events = POLLIN };
    return poll(&p, 1, 0) > 0 && (p.revents & POLLHUP);
}

static void write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return; /* the service is gone: nothing left to tell */
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Reaps every ended child; returns 1 when the kernel was among them (and says so on fd 1). */
static int reap(pid_t *kernel) {
    int status;
    pid_t pid;
    int kernel_ended = 0;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid != *kernel) continue;
        int code = WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
        char line[64];
        int len = snprintf(line, sizeof line, "{\"notice\": \"kernel_exit\", \"status\": %d}\n", code);
        write_all(1, line, (size_t)len);
        *kernel = 0;
        kernel_ended = 1;
    }
    return kernel_ended;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: ciw-idle KERNEL_PID PROGRAM [ARG...]\n");
        return 2;
    }
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    pid_t kernel = (pid_t)atol(argv[1]);

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC);
    if (sfd < 0) return 1;
    reap(&kernel); /* a child that ended before the signal was blocked */
    const char *lifeline_env = getenv("CIW_LIFELINE_FD");
    const char *orphan_env = getenv("CIW_ORPHAN_MS");
    int lifeline = lifeline_env ? atoi(lifeline_env) : -1;
    long orphan_ms = orphan_env ? atol(orphan_env) : 0;
    long orphan_since = -1;

    for (;;) {
        /* The lifeline is watched until it hangs up; then checked once a second until a service is back. */
        struct pollfd fds[3] = { { .fd = sfd, .events = POLLIN }, { .fd = 0, .events = POLLIN },
                                 { .fd = orphan_since < 0 ? lifeline : -1, .events = POLLIN } };
        int timeout = lifeline >= 0 && orphan_since >= 0 ? 1000 : -1;
        if (poll(fds, lifeline >= 0 ? 3 : 2, timeout) < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        if (lifeline >= 0) {
            if (orphan_since < 0 && (fds[2].revents & POLLHUP)) orphan_since = now_ms();
            else if (orphan_since >= 0 && !orphaned(lifeline)) orphan_since = -1;
            if (orphan_since >= 0 && orphan_ms > 0 && now_ms() - orphan_since >= orphan_ms) return 0;
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo info[8];
            if (read(sfd, info, sizeof info) < 0 && errno != EINTR) return 1;
            reap(&kernel);
        }
        if (fds[1].revents) break; /* a request, or the service closed the channel: the supervisor handles both */
    }
    reap(&kernel);

    char pid_arg[24];
    snprintf(pid_arg, sizeof pid_arg, "%ld", (long)kernel);
    char **args = calloc((size_t)argc + 2, sizeof *args);
    if (args == NULL) return 1;
    int n = 0;
    for (int i = 2; i < argc; i++) args[n++] = argv[i];
    args[n++] = "--resume";
    args[n++] = pid_arg;
    args[n] = NULL;
    close(sfd);
    sigprocmask(SIG_UNBLOCK, &chld, NULL);
    execv(args[0], args);
    return 127; /* cannot come back: ending pid 1 ends the sandbox, which the service reports */
}
