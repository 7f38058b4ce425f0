/*
 * The Linux side of `cargo xtask load --linux`: the same static file
 * libos-unix serves, served by a small epoll HTTP/1.1 server of our own,
 * beside the same UDP echo, on a stock Debian cloud kernel.
 *
 * Runs as /init of an initramfs in QEMU (user networking, the host's
 * ports forwarded to guest UDP 7 and TCP 80). It loads the virtio-net
 * driver and its dependencies from /modules (finit_module, in dependency
 * order), brings eth0 up as 10.0.2.15/24 with ioctls, reads /www/index.html
 * and builds its complete response once (as libos-unix does), then serves:
 * keep-alive, one epoll loop, non-blocking sockets. It stops after
 * `requests` requests (kernel command line `requests=N`, which the kernel
 * hands to init as an environment variable) and prints
 *
 *     LINUX-HTTPD requests=N busy_ns=B busy_jiffies=J total_jiffies=T user_hz=H
 *
 * from the first request answered to the last: busy_ns is CLOCK_MONOTONIC
 * time minus the time the CPU slept idle (the tick code's idle_sleeptime
 * and iowait_sleeptime from /proc/timer_list, in nanoseconds; under
 * `-icount shift=0` a nanosecond of guest time is one instruction), and
 * busy/total jiffies are /proc/stat's CPU time (all but idle and iowait,
 * and all), coarser, as a cross-check. Then it powers off.
 *
 * Built by xtask with `gcc -O2 -static`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define REQUEST_MAX 2048

static void die(const char *what)
{
    printf("LINUX-ERROR %s: %s\n", what, strerror(errno));
    fflush(stdout);
    if (getpid() == 1) {
        reboot(RB_POWER_OFF);
    }
    exit(1);
}

static void load_module(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/modules/%s.ko", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        die(path);
    }
    if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
        die(path);
    }
    close(fd);
}

static void configure_eth0(void)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) {
        die("socket for ioctl");
    }
    struct ifreq ifr;
    /* The driver probes asynchronously: wait for the interface. */
    for (int tries = 0; if_nametoindex("eth0") == 0; tries++) {
        if (tries > 500) {
            errno = ENODEV;
            die("eth0 never appeared");
        }
        usleep(10000);
    }
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    struct sockaddr_in *addr = (struct sockaddr_in *)&ifr.ifr_addr;
    addr->sin_family = AF_INET;
    inet_pton(AF_INET, "10.0.2.15", &addr->sin_addr);
    if (ioctl(s, SIOCSIFADDR, &ifr) != 0) {
        die("SIOCSIFADDR");
    }
    inet_pton(AF_INET, "255.255.255.0", &addr->sin_addr);
    if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0) {
        die("SIOCSIFNETMASK");
    }
    if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
        die("SIOCGIFFLAGS");
    }
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) {
        die("SIOCSIFFLAGS");
    }
    close(s);
}

/* /proc/stat's first line: busy (all but idle and iowait) and total jiffies. */
static void cpu_jiffies(unsigned long long *busy, unsigned long long *total)
{
    unsigned long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) {
        die("/proc/stat");
    }
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
               &v[6], &v[7], &v[8], &v[9]) < 8) {
        die("parsing /proc/stat");
    }
    fclose(f);
    /* user nice system idle iowait irq softirq steal (guest, guest_nice
     * are already in user and nice). */
    *total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    *busy = *total - v[3] - v[4];
}

/* CLOCK_MONOTONIC minus the CPU's idle and iowait sleep, in nanoseconds
 * (0 if /proc/timer_list does not say). */
static unsigned long long busy_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    unsigned long long total = (unsigned long long)now.tv_sec * 1000000000ULL + now.tv_nsec, idle = 0;
    FILE *f = fopen("/proc/timer_list", "r");
    if (!f) {
        return 0;
    }
    char line[256];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, " .idle_sleeptime : %llu nsecs", &v) == 1 ||
            sscanf(line, " .iowait_sleeptime : %llu nsecs", &v) == 1) {
            idle += v;
            found = 1;
        }
    }
    fclose(f);
    return found ? total - idle : 0;
}

struct conn {
    int fd;
    char request[REQUEST_MAX];
    size_t have;
    const char *out;
    size_t out_len, out_sent;
    int close_after;
};

static struct conn conns[MAX_CONNS];
static char *response_keep, *response_close;
static size_t response_keep_len, response_close_len;
static const char not_found[] =
    "HTTP/1.1 404 Not Found\r\nServer: linux-httpd\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: "
    "close\r\n\r\nnot found\n";
static const char bad_request[] =
    "HTTP/1.1 400 Bad Request\r\nServer: linux-httpd\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: "
    "close\r\n\r\nbad request\n";

static char *build_response(const char *body, size_t body_len, int keep_alive, size_t *len)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nServer: linux-httpd\r\nContent-Type: text/html; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: %s\r\n\r\n",
                     body_len, keep_alive ? "keep-alive" : "close");
    char *out = malloc(n + body_len);
    if (!out) {
        die("malloc");
    }
    memcpy(out, head, n);
    memcpy(out + n, body, body_len);
    *len = n + body_len;
    return out;
}

static void drop(int epfd, struct conn *c)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

/* Send what is pending; 0 when all of it went, 1 if the socket is full, -1 on error. */
static int flush_out(struct conn *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n < 0) {
            return errno == EAGAIN ? 1 : -1;
        }
        c->out_sent += n;
    }
    c->out = NULL;
    return 0;
}

static int has_token(const char *head, size_t len, const char *token)
{
    return memmem(head, len, token, strlen(token)) != NULL;
}

int main(void)
{
    if (getpid() == 1) {
        mount("proc", "/proc", "proc", 0, NULL);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *modules[] = {"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                             "virtio_pci",  "failover", "net_failover", "virtio_net"};
    for (size_t i = 0; i < sizeof modules / sizeof *modules; i++) {
        load_module(modules[i]);
    }
    configure_eth0();
    const char *want_text = getenv("requests");
    unsigned long want = want_text ? strtoul(want_text, NULL, 10) : 0;

    int file = open("/www/index.html", O_RDONLY);
    if (file < 0) {
        die("/www/index.html");
    }
    struct stat st;
    fstat(file, &st);
    char *body = malloc(st.st_size);
    if (!body || read(file, body, st.st_size) != st.st_size) {
        die("reading /www/index.html");
    }
    close(file);
    response_keep = build_response(body, st.st_size, 1, &response_keep_len);
    response_close = build_response(body, st.st_size, 0, &response_close_len);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(80), .sin_addr.s_addr = INADDR_ANY};
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 256) != 0) {
        die("listen on port 80");
    }
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    addr.sin_port = htons(7);
    if (bind(udp, (struct sockaddr *)&addr, sizeof addr) != 0) {
        die("bind udp 7");
    }
    int epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
    ev.data.fd = udp;
    epoll_ctl(epfd, EPOLL_CTL_ADD, udp, &ev);
    for (int i = 0; i < MAX_CONNS; i++) {
        conns[i].fd = -1;
    }
    printf("LINUX-HTTPD serving %s (%ld bytes) on port 80, udp echo on 7, stopping after %lu requests\n",
           "/www/index.html", (long)st.st_size, want);

    unsigned long served = 0, echoes = 0;
    unsigned long long busy0 = 0, total0 = 0, ns0 = 0;
    struct epoll_event events[64];
    char datagram[2048];
    while (want == 0 || served < want) {
        int n = epoll_wait(epfd, events, 64, -1);
        for (int e = 0; e < n; e++) {
            int fd = events[e].data.fd;
            if (fd == udp) {
                struct sockaddr_in from;
                socklen_t from_len = sizeof from;
                ssize_t len;
                while ((len = recvfrom(udp, datagram, sizeof datagram, 0, (struct sockaddr *)&from, &from_len)) >= 0) {
                    sendto(udp, datagram, len, 0, (struct sockaddr *)&from, from_len);
                    echoes++;
                    from_len = sizeof from;
                }
                continue;
            }
            if (fd == listener) {
                int c;
                while ((c = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAX_CONNS) {
                        close(c);
                        continue;
                    }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[c] = (struct conn){.fd = c};
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.fd = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            struct conn *c = &conns[fd];
            if (c->fd < 0) {
                continue;
            }
            for (;;) {
                if (c->out) {
                    int r = flush_out(c);
                    if (r < 0) {
                        drop(epfd, c);
                        break;
                    }
                    if (r > 0) {
                        break;
                    }
                    if (c->close_after) {
                        drop(epfd, c);
                        break;
                    }
                }
                char *end = memmem(c->request, c->have, "\r\n\r\n", 4);
                if (!end) {
                    if (c->have == REQUEST_MAX) {
                        c->out = bad_request, c->out_len = sizeof bad_request - 1, c->out_sent = 0, c->close_after = 1;
                        continue;
                    }
                    ssize_t got = recv(fd, c->request + c->have, REQUEST_MAX - c->have, 0);
                    if (got == 0 || (got < 0 && errno != EAGAIN)) {
                        drop(epfd, c);
                        break;
                    }
                    if (got < 0) {
                        break;
                    }
                    c->have += got;
                    continue;
                }
                size_t head_len = end + 4 - c->request;
                int keep = has_token(c->request, head_len, " HTTP/1.1\r\n") &&
                           !has_token(c->request, head_len, "Connection: close");
                if (strncmp(c->request, "GET /index.html ", 16) == 0) {
                    c->out = keep ? response_keep : response_close;
                    c->out_len = keep ? response_keep_len : response_close_len;
                    c->close_after = !keep;
                } else {
                    c->out = not_found, c->out_len = sizeof not_found - 1, c->close_after = 1;
                }
                c->out_sent = 0;
                memmove(c->request, c->request + head_len, c->have - head_len);
                c->have -= head_len;
                served++;
                if (served == 1) {
                    ns0 = busy_ns();
                    cpu_jiffies(&busy0, &total0);
                }
            }
        }
    }
    /* Send the responses still pending (the last requests'), blocking. */
    for (int i = 0; i < MAX_CONNS; i++) {
        if (conns[i].fd >= 0 && conns[i].out) {
            fcntl(conns[i].fd, F_SETFL, fcntl(conns[i].fd, F_GETFL) & ~O_NONBLOCK);
            flush_out(&conns[i]);
        }
    }
    /* Let the last responses drain (the client reads them; closes follow). */
    usleep(200000);
    unsigned long long busy1, total1, ns1 = busy_ns();
    cpu_jiffies(&busy1, &total1);
    printf("LINUX-HTTPD requests=%lu busy_ns=%llu busy_jiffies=%llu total_jiffies=%llu user_hz=%ld udp_echoes=%lu\n",
           served - 1, ns0 && ns1 ? ns1 - ns0 : 0, busy1 - busy0, total1 - total0, sysconf(_SC_CLK_TCK), echoes);
    printf("LINUX-END\n");
    fflush(stdout);
    if (getpid() == 1) {
        reboot(RB_POWER_OFF);
    }
    return 0;
}
