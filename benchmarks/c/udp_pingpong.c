/* UDP ping-pong over kernel sockets: the C anchor of benchmarks/latency_veth.py.
 *
 *   udp_pingpong pong LOCAL_IP PORT COUNT
 *   udp_pingpong ping LOCAL_IP PORT PEER_IP ITERS WARM PAYLEN
 *
 * Both sides busy-poll recv(MSG_DONTWAIT). ping prints one line:
 *   n min p50 p99 max mean   (nanoseconds, CLOCK_MONOTONIC round trips)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static int open_sock(const char *ip, int port) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("bind");
        exit(1);
    }
    return s;
}

int main(int argc, char **argv) {
    char buf[65536];
    if (argc == 5 && !strcmp(argv[1], "pong")) {
        int s = open_sock(argv[2], atoi(argv[3]));
        long count = atol(argv[4]);
        struct sockaddr_in src;
        printf("ready\n");
        fflush(stdout);
        for (long i = 0; i < count; i++) {
            socklen_t sl = sizeof src;
            ssize_t n;
            while ((n = recvfrom(s, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&src,
                                 &sl)) < 0)
                if (errno != EAGAIN) { perror("recvfrom"); return 1; }
            sendto(s, buf, n, 0, (struct sockaddr *)&src, sl);
        }
        return 0;
    }
    if (argc == 8 && !strcmp(argv[1], "ping")) {
        int s = open_sock(argv[2], atoi(argv[3]));
        struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, argv[4], &peer.sin_addr);
        long iters = atol(argv[5]), warm = atol(argv[6]);
        int paylen = atoi(argv[7]);
        long long *rtt = calloc(iters, sizeof *rtt);
        memset(buf, 0, sizeof buf);
        for (long i = 0; i < warm + iters; i++) {
            long long t0 = now_ns();
            sendto(s, buf, paylen, 0, (struct sockaddr *)&peer, sizeof peer);
            while (recv(s, buf, sizeof buf, MSG_DONTWAIT) < 0)
                if (errno != EAGAIN) { perror("recv"); return 1; }
            long long t1 = now_ns();
            if (i >= warm) rtt[i - warm] = t1 - t0;
        }
        long long sum = 0;
        for (long i = 0; i < iters; i++) sum += rtt[i];
        qsort(rtt, iters, sizeof *rtt, cmp);
        printf("%ld %lld %lld %lld %lld %lld\n", iters, rtt[0], rtt[iters / 2],
               rtt[(long)(iters * 0.99)], rtt[iters - 1], sum / iters);
        return 0;
    }
    fprintf(stderr, "usage: udp_pingpong pong IP PORT COUNT | ping IP PORT PEER ITERS WARM PAYLEN\n");
    return 2;
}
