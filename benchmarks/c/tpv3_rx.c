/* tpv3_rx: C anchor for benchmarks/rx_veth.py --rate — an AF_PACKET TPACKET_V3 receiver.
 *
 *   tpv3_rx IFNAME PORT        (counts IPv4/UDP frames to PORT; a cBPF filter passes only those)
 *   tpv3_rx IFNAME PORT model  (and does the work ef_vi's model asks of a receiver: each frame
 *                               copied into the next of 16384 posted 2 KiB buffers, one 24-byte
 *                               event written per frame; then a sink's pass over the events
 *                               counting packets and bytes and re-posting each buffer)
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
    if (argc != 3 && !(argc == 4 && !strcmp(argv[3], "model"))) {
        fprintf(stderr, "usage: tpv3_rx IFNAME PORT [model]\n");
        return 2;
    }
    int model = argc == 4;
    enum { NBUF = 16384 };
    struct ev { uint8_t type, subtype; uint16_t flags, q_id, ofs; uint32_t rq_id, len; int64_t ts; };
    uint8_t *bufs = NULL;
    uint32_t *fifo = NULL;
    struct ev *evs = NULL;
    unsigned long long fifo_head = 0, fifo_tail = 0, bytes = 0;
    if (model) {
        bufs = mmap(NULL, (size_t)NBUF * 2048, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        fifo = calloc(NBUF, sizeof(*fifo));
        evs = calloc(NBUF, sizeof(*evs));
        if (bufs == MAP_FAILED || !fifo || !evs) { perror("model memory"); return 1; }
        madvise(bufs, (size_t)NBUF * 2048, MADV_HUGEPAGE);
        memset(bufs, 0, (size_t)NBUF * 2048);  /* faulted in before "ready", as efvi's locked region */
        for (uint32_t i = 0; i < NBUF - 1; i++) fifo[fifo_tail++ % NBUF] = i;  /* all posted */
    }
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
        if (!model) {
            for (uint32_t i = 0; i < k; i++) {
                n += h->tp_snaplen > 0;
                h = (void *)((uint8_t *)h + h->tp_next_offset);
            }
        } else {  /* the VI: frames into posted buffers, one event each (drop if none) */
            uint32_t ne = 0;
            for (uint32_t i = 0; i < k; i++) {
                if (fifo_head != fifo_tail && ne < NBUF) {
                    uint32_t id = fifo[fifo_head++ % NBUF];
                    uint8_t *f = (uint8_t *)h + h->tp_mac;
                    uint32_t len = h->tp_snaplen < 2048 ? h->tp_snaplen : 2048;
                    memcpy(bufs + (size_t)id * 2048, f, len);
                    struct ev *e = &evs[ne++];
                    e->type = 0; e->subtype = 0; e->flags = 1 | ((f[0] & 1) << 3);
                    e->q_id = 0; e->ofs = 0; e->rq_id = id; e->len = len;
                    e->ts = (int64_t)h->tp_sec * 1000000000 + h->tp_nsec;
                }
                h = (void *)((uint8_t *)h + h->tp_next_offset);
            }
            for (uint32_t i = 0; i < ne; i++) {  /* the sink: count, re-post */
                n += evs[i].type == 0;
                bytes += evs[i].len;
                fifo[fifo_tail++ % NBUF] = evs[i].rq_id;
            }
        }
        __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        blk = (blk + 1) % req.tp_block_nr;
    }
    printf("{\"received\": %llu, \"bytes\": %llu}\n", n, bytes);
    return 0;
}
