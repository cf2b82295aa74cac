/* tpv3_rx: C anchor for benchmarks/rx_veth.py --rate — an AF_PACKET TPACKET_V3 receiver.
 *
 *   tpv3_rx IFNAME PORT        (counts IPv4/UDP frames to PORT; a cBPF filter passes only those)
 *
 * 64 blocks of 1 MiB, 2048-byte frame hint, block retire timeout 60 ms; poll() when the
 * current block is not ready, walk every frame of a ready block, hand it back. Prints
 * "ready" once bound and {"received": N} on SIGINT/SIGTERM. Written for this project. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_sig(int s) { (void)s; stop = 1; }

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: tpv3_rx IFNAME PORT\n"); return 2; }
    unsigned port = (unsigned)atoi(argv[2]);
    int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (fd < 0) { perror("socket"); return 1; }
    struct sock_filter code[] = {
        {0x28, 0, 0, 12}, {0x15, 0, 5, 0x0800},   /* ldh [12]; jeq IPv4 */
        {0x30, 0, 0, 23}, {0x15, 0, 3, 17},       /* ldb [23]; jeq UDP  */
        {0x28, 0, 0, 36}, {0x15, 0, 1, port},     /* ldh [36]; jeq PORT (IHL 5) */
        {0x06, 0, 0, 0x40000}, {0x06, 0, 0, 0},
    };
    struct sock_fprog prog = {sizeof(code) / sizeof(code[0]), code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog))) { perror("filter"); return 1; }
    int v = TPACKET_V3;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v))) { perror("version"); return 1; }
    struct tpacket_req3 req = {0};
    req.tp_block_size = 1 << 20;
    req.tp_block_nr = 64;
    req.tp_frame_size = 2048;
    req.tp_frame_nr = req.tp_block_size / req.tp_frame_size * req.tp_block_nr;
    req.tp_retire_blk_tov = 60;
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req))) { perror("ring"); return 1; }
    size_t len = (size_t)req.tp_block_size * req.tp_block_nr;
    uint8_t *ring = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED, fd, 0);
    if (ring == MAP_FAILED) ring = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ring == MAP_FAILED) { perror("mmap"); return 1; }
    struct sockaddr_ll sll = {0};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = (int)if_nametoindex(argv[1]);
    if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof(sll))) { perror("bind"); return 1; }
    struct sigaction sa = {0};
    sa.sa_handler = on_sig;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("ready\n");
    fflush(stdout);
    unsigned long long n = 0;
    unsigned blk = 0;
    struct pollfd pfd = {fd, POLLIN | POLLERR, 0};
    while (!stop) {
        struct tpacket_block_desc *bd = (void *)(ring + (size_t)blk * req.tp_block_size);
        if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)) {
            poll(&pfd, 1, 200);
            continue;
        }
        uint32_t k = bd->hdr.bh1.num_pkts;
        struct tpacket3_hdr *h = (void *)((uint8_t *)bd + bd->hdr.bh1.offset_to_first_pkt);
        for (uint32_t i = 0; i < k; i++) {
            n += h->tp_snaplen > 0;
            h = (void *)((uint8_t *)h + h->tp_next_offset);
        }
        __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        blk = (blk + 1) % req.tp_block_nr;
    }
    printf("{\"received\": %llu}\n", n);
    return 0;
}
