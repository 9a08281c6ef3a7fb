/*
 * ciw-fork.so: the fork of a checkpoint (ciw_checkpoint.py), in C, loaded by the Python kernel with ctypes.
 *
 * Why C: every page a process writes after fork() is copied, and the copy (or the original the other side
 * keeps) is memory the checkpoint holds. Python's os.fork() runs its at-fork handlers in the child (threads,
 * random, logging…) and every line of Python touches reference counts: about 0.5 MiB per checkpoint. Here the
 * child runs only system calls until it is woken; the Python part of a fork's child
 * (PyOS_AfterFork_Child) runs then, in the kernel that the rollback made of it.
 *
 * ciw_checkpoint_fork(waker): every signal is blocked from the child's first instruction; the child makes
 * itself a checkpoint — its own session (the kernel's session kill spares it), named "ciw-checkpoint", not
 * dumpable (no ptrace, no /proc/<pid>/mem from code of the same user), first for the OOM killer — and says
 * so on a pipe; the parent returns its pid once it did (or -errno). The child then waits in sigwaitinfo for
 * SIGUSR1 sent with kill() by `waker` (the supervisor): a signal queued with sigqueue() cannot fake that
 * sender, since its si_code differs. Everything else sent meanwhile is dropped. It returns 0 when woken,
 * with its signal mask, name, dumpability and OOM score as the kernel's were.
 *
 * Built when the service starts (runtime-dir.ts), like ciw-idle; without a C compiler the kernel forks
 * with os.fork() instead.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_TIMEOUT_MS 5000

/* Sets this process's OOM score. /proc/self belongs to root while the process is not dumpable (as a sandbox
 * started by a root service is, after its setuid): dumpable for the moment of the write. */
static void oom_score_adj(const char *value) {
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, value, strlen(value)) < 0) {
            /* not allowed here: the checkpoint is simply not first in line */
        }
        close(fd);
    }
}

static void drop_pending(void) {
    struct timespec now = {0, 0};
    for (;;) {
        sigset_t pending;
        int any = 0;
        sigpending(&pending);
        for (int s = 1; s < NSIG; s++) {
            if (sigismember(&pending, s) == 1) any = 1;
        }
        if (!any || sigtimedwait(&pending, NULL, &now) < 0) return;
    }
}

static void sleep_until_woken(pid_t waker) {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    for (;;) {
        siginfo_t info;
        if (sigwaitinfo(&usr1, &info) == SIGUSR1 && info.si_code == SI_USER && info.si_pid == waker) return;
    }
}

long ciw_checkpoint_fork(int waker) {
    sigset_t all, old;
    int ready[2];
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    if (pipe2(ready, O_CLOEXEC) < 0) {
        int e = errno;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return -e;
    }
    int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0); /* put back when woken */
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(ready[0]);
        close(ready[1]);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return -e;
    }
    if (pid == 0) {
        char one = 1;
        close(ready[0]);
        setsid();
        prctl(PR_SET_NAME, "ciw-checkpoint", 0, 0, 0);
        oom_score_adj("1000");
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        if (write(ready[1], &one, 1) < 0) _exit(1);
        close(ready[1]);
        sleep_until_woken((pid_t)waker);
        drop_pending();
        oom_score_adj("0");
        prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0);
        prctl(PR_SET_NAME, "python3", 0, 0, 0);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return 0;
    }
    close(ready[1]);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    struct pollfd wait_for = {ready[0], POLLIN, 0};
    char said = 0;
    int ok = poll(&wait_for, 1, READY_TIMEOUT_MS) == 1 && read(ready[0], &said, 1) == 1;
    close(ready[0]);
    if (!ok) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -ECHILD;
    }
    return pid;
}
