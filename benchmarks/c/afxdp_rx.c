/* afxdp_rx: C anchor for benchmarks/rx_veth.py --rate — an AF_XDP receiver with poll().
 *
 *   afxdp_rx IFNAME skb|drv
 *
 * No libbpf/libxdp: the XDP program (redirect every frame of queue 0 to the socket via an
 * XSKMAP, XDP_PASS when no socket) is five eBPF instructions loaded with the bpf() syscall
 * and attached with a bpf link (released when the process exits). One socket on queue 0,
 * copy mode, need_wakeup; 4096 frames of 2048 bytes. Loop: drain the RX ring, give the
 * frames straight back through the fill ring (one producer store per batch), poll() when
 * the RX ring is empty. Prints "ready" once bound and {"received": N} on SIGINT/SIGTERM.
 * Written for this project. */
#define _GNU_SOURCE
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SOL_XDP
#define SOL_XDP 283
#endif
#ifndef AF_XDP
#define AF_XDP 44
#endif
#define NF 4096
#define FS 2048

static volatile sig_atomic_t stop;
static void on_sig(int s) { (void)s; stop = 1; }
static long bpf(int cmd, union bpf_attr *a) { return syscall(__NR_bpf, cmd, a, sizeof(*a)); }
static void die(const char *what) { perror(what); exit(1); }

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: afxdp_rx IFNAME skb|drv\n"); return 2; }
    int ifindex = (int)if_nametoindex(argv[1]);
    if (!ifindex) die("if_nametoindex");
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_type = BPF_MAP_TYPE_XSKMAP;
    a.key_size = 4;
    a.value_size = 4;
    a.max_entries = 64;
    int map = (int)bpf(BPF_MAP_CREATE, &a);
    if (map < 0) die("map create");
    struct bpf_insn insns[] = {
        {BPF_LDX | BPF_W | BPF_MEM, 2, 1, 16, 0},       /* r2 = ctx->rx_queue_index */
        {BPF_LD | BPF_DW | BPF_IMM, 1, BPF_PSEUDO_MAP_FD, 0, map}, {0, 0, 0, 0, 0},
        {BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, 2},      /* r3 = XDP_PASS */
        {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_redirect_map},
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    char log[4096] = "";
    memset(&a, 0, sizeof(a));
    a.prog_type = BPF_PROG_TYPE_XDP;
    a.insn_cnt = sizeof(insns) / sizeof(insns[0]);
    a.insns = (uint64_t)(uintptr_t)insns;
    a.license = (uint64_t)(uintptr_t)"GPL";
    a.log_buf = (uint64_t)(uintptr_t)log;
    a.log_size = sizeof(log);
    a.log_level = 1;
    int prog = (int)bpf(BPF_PROG_LOAD, &a);
    if (prog < 0) { fprintf(stderr, "%s\n", log); die("prog load"); }

    int fd = socket(AF_XDP, SOCK_RAW, 0);
    if (fd < 0) die("socket");
    uint8_t *umem = mmap(NULL, (size_t)NF * FS, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (umem == MAP_FAILED) die("mmap umem");
    struct xdp_umem_reg mr = {0};
    mr.addr = (uint64_t)(uintptr_t)umem;
    mr.len = (uint64_t)NF * FS;
    mr.chunk_size = FS;
    if (setsockopt(fd, SOL_XDP, XDP_UMEM_REG, &mr, sizeof(mr))) die("umem reg");
    int nring = NF;
    if (setsockopt(fd, SOL_XDP, XDP_UMEM_FILL_RING, &nring, sizeof(nring))) die("fill ring");
    if (setsockopt(fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &nring, sizeof(nring))) die("comp ring");
    if (setsockopt(fd, SOL_XDP, XDP_RX_RING, &nring, sizeof(nring))) die("rx ring");
    struct xdp_mmap_offsets off;
    socklen_t ol = sizeof(off);
    if (getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &ol)) die("offsets");
    uint8_t *fm = mmap(NULL, off.fr.desc + NF * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_POPULATE, fd, XDP_UMEM_PGOFF_FILL_RING);
    uint8_t *rm = mmap(NULL, off.rx.desc + NF * sizeof(struct xdp_desc), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_POPULATE, fd, XDP_PGOFF_RX_RING);
    if (fm == MAP_FAILED || rm == MAP_FAILED) die("mmap rings");
    uint32_t *f_prod = (void *)(fm + off.fr.producer), *f_flags = (void *)(fm + off.fr.flags);
    uint64_t *f_desc = (void *)(fm + off.fr.desc);
    uint32_t *r_prod = (void *)(rm + off.rx.producer), *r_cons = (void *)(rm + off.rx.consumer);
    struct xdp_desc *r_desc = (void *)(rm + off.rx.desc);
    for (uint32_t i = 0; i < NF; i++) f_desc[i] = (uint64_t)i * FS;
    __atomic_store_n(f_prod, NF, __ATOMIC_RELEASE);
    uint32_t fprod = NF;
    struct sockaddr_xdp sx = {0};
    sx.sxdp_family = AF_XDP;
    sx.sxdp_ifindex = (uint32_t)ifindex;
    sx.sxdp_queue_id = 0;
    sx.sxdp_flags = XDP_USE_NEED_WAKEUP | XDP_COPY;
    if (bind(fd, (struct sockaddr *)&sx, sizeof(sx))) die("bind");
    uint32_t key = 0;
    memset(&a, 0, sizeof(a));
    a.map_fd = (uint32_t)map;
    a.key = (uint64_t)(uintptr_t)&key;
    a.value = (uint64_t)(uintptr_t)&fd;
    if (bpf(BPF_MAP_UPDATE_ELEM, &a)) die("map update");
    memset(&a, 0, sizeof(a));
    a.link_create.prog_fd = (uint32_t)prog;
    a.link_create.target_ifindex = (uint32_t)ifindex;
    a.link_create.attach_type = BPF_XDP;
    a.link_create.flags = strcmp(argv[2], "drv") ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
    if (bpf(BPF_LINK_CREATE, &a) < 0) die("link create (XDP attach)");

    struct sigaction sa = {0};
    sa.sa_handler = on_sig;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("ready\n");
    fflush(stdout);
    unsigned long long n = 0;
    uint32_t cons = 0;
    struct pollfd pfd = {fd, POLLIN, 0};
    while (!stop) {
        uint32_t prod = __atomic_load_n(r_prod, __ATOMIC_ACQUIRE);
        if (prod == cons) {
            poll(&pfd, 1, 200);
            continue;
        }
        for (; cons != prod; cons++) {
            f_desc[fprod++ & (NF - 1)] = r_desc[cons & (NF - 1)].addr & ~(uint64_t)(FS - 1);
            n++;
        }
        __atomic_store_n(r_cons, cons, __ATOMIC_RELEASE);
        __atomic_store_n(f_prod, fprod, __ATOMIC_RELEASE);
        if (__atomic_load_n(f_flags, __ATOMIC_ACQUIRE) & XDP_RING_NEED_WAKEUP)
            recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
    }
    printf("{\"received\": %llu}\n", n);
    return 0;
}
