/* The C floor for bench/models.sh: the least work a server can do per
 * request on this kernel. N processes (SO_REUSEPORT, one listening socket
 * each), one edge-triggered epoll loop each; every request gets the same
 * 1 KiB answer from memory in one send(). No parsing beyond finding the
 * end of each request head (and "Connection: close"), no files, no timers,
 * no logs: what corral does on top of this is its own cost.
 *
 *   gcc -O2 -o floor bench/floor.c && ./floor PORT [PROCESSES]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BODY 1024
static char answer[256 + BODY], answer_close[256 + BODY];
static int answer_len, answer_close_len;

struct conn { int fd; int used; char buf[4096]; };

static int listen_on(int port) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 511)) { perror("listen"); exit(1); }
    return s;
}

/* Answers every complete request in c->buf; returns -1 to close. */
static int serve(struct conn *c) {
    for (;;) {
        char *end = memmem(c->buf, c->used, "\r\n\r\n", 4);
        if (!end) return c->used == sizeof c->buf ? -1 : 0;
        int len = end + 4 - c->buf;
        int close_it = memmem(c->buf, len, "Connection: close", 17) != NULL;
        const char *a = close_it ? answer_close : answer;
        int n = close_it ? answer_close_len : answer_len;
        if (send(c->fd, a, n, MSG_NOSIGNAL) != n) return -1;
        memmove(c->buf, c->buf + len, c->used - len);
        c->used -= len;
        if (close_it) return -1;
    }
}

static void loop(int port) {
    int ls = listen_on(port), ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL }, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event ce = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            int done = 0;
            for (;;) {
                ssize_t r = recv(c->fd, c->buf + c->used, sizeof c->buf - c->used, 0);
                if (r > 0) { c->used += r; if (serve(c) < 0) { done = 1; break; } continue; }
                if (r < 0 && errno == EAGAIN) break;
                done = 1;
                break;
            }
            if (done) { close(c->fd); free(c); }
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: floor PORT [PROCESSES]\n"); return 2; }
    int port = atoi(argv[1]), procs = argc > 2 ? atoi(argv[2]) : 1;
    char body[BODY];
    memset(body, 'x', sizeof body);
    answer_len = snprintf(answer, sizeof answer, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n", BODY);
    memcpy(answer + answer_len, body, BODY); answer_len += BODY;
    answer_close_len = snprintf(answer_close, sizeof answer_close, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", BODY);
    memcpy(answer_close + answer_close_len, body, BODY); answer_close_len += BODY;
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < procs; i++)
        if (fork() == 0) { prctl(PR_SET_PDEATHSIG, SIGTERM); loop(port); return 0; }
    loop(port);
    return 0;
}
