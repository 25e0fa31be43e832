/* udpgen — a small VXLAN-shaped UDP packet generator for `python -m vtaplab bench proxy`.
 *
 * Built at run time by the bench with the machine's `cc` (no dependencies beyond libc) and
 * run inside the bench's generator namespace. It writes whole Ethernet frames to one
 * interface through an AF_PACKET socket with sendmmsg (PACKET_QDISC_BYPASS: straight to the
 * driver), so one system call sends a batch and the kernel does no routing for the sender:
 * the cost measured is the forwarding namespace's, not the generator's.
 *
 * Like VXLAN, the outer UDP source port changes per flow: packet i of a run goes from
 * (SRC + (i / PORTS) % ADDRS, SPORT + i % PORTS) to (DST, DPORT), so PORTS * ADDRS distinct
 * flows are cycled. With -f the UDP datagram is larger than the MTU and is sent as IP
 * fragments (a first fragment with the UDP header, then fragments without one).
 *
 * Bounded by count AND time: it stops after COUNT datagrams or SECONDS, whichever comes
 * first, and prints one line: `sent=DATAGRAMS frames=FRAMES seconds=ELAPSED cpu=SECONDS`
 * (cpu: its user + system time, which includes the forwarding the kernel did on its behalf
 * in softirq context when that ran on the back of its system calls).
 *
 * usage: udpgen -i IFACE -s SRCMAC -d DSTMAC -S SRCIP -D DSTIP -c COUNT -t SECONDS
 *               [-p DPORT] [-P SPORT] [-n PORTS] [-a ADDRS] [-l UDP_PAYLOAD] [-f] [-b BATCH]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 256
#define MAX_FRAGS 8           /* per datagram: 8 * 1480 bytes covers any -l we accept */
#define MTU 1500
#define FRAME_MAX (14 + MTU)
#define VXLAN_HLEN 8

static void die(const char *what) {
    fprintf(stderr, "udpgen: %s\n", what);
    exit(2);
}

static void die_errno(const char *what) {
    fprintf(stderr, "udpgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

static unsigned long parse_ulong(const char *text, const char *name, unsigned long lo,
                                 unsigned long hi) {
    char *end = NULL;
    errno = 0;
    unsigned long value = strtoul(text, &end, 10);
    if (errno || !end || *end || end == text || value < lo || value > hi) {
        fprintf(stderr, "udpgen: %s '%s' is not accepted; accepted: %lu..%lu\n", name, text,
                lo, hi);
        exit(2);
    }
    return value;
}

static double parse_seconds(const char *text) {
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || !end || *end || end == text || !(value >= 0.01 && value <= 3600.0)) {
        fprintf(stderr, "udpgen: -t SECONDS '%s' is not accepted; accepted: 0.01..3600\n", text);
        exit(2);
    }
    return value;
}

static void parse_mac(const char *text, uint8_t mac[6]) {
    unsigned int b[6];
    char tail;
    if (sscanf(text, "%x:%x:%x:%x:%x:%x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail)
        != 6)
        die("a MAC address must look like 02:00:00:00:00:01");
    for (int i = 0; i < 6; i++) {
        if (b[i] > 255) die("a MAC address byte is over ff");
        mac[i] = (uint8_t)b[i];
    }
}

static uint32_t parse_ip(const char *text) {
    struct in_addr addr;
    if (inet_pton(AF_INET, text, &addr) != 1) die("an IPv4 address must look like 198.18.0.2");
    return ntohl(addr.s_addr);
}

static uint16_t ip_checksum(const void *data, size_t len) {
    const uint16_t *words = data;
    uint32_t sum = 0;
    for (size_t i = 0; i < len / 2; i++) sum += words[i];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct options {
    const char *iface;
    uint8_t src_mac[6], dst_mac[6];
    uint32_t src_ip, dst_ip;
    double seconds;
    unsigned long count, dport, sport, ports, addrs, payload, batch;
    int fragment;
};

/* The frames of datagram `seq`: returns how many (1, or the fragments). */
static int build_datagram(const struct options *o, unsigned long seq, uint8_t frames[][FRAME_MAX],
                          size_t lens[]) {
    uint32_t src = o->src_ip + (uint32_t)((seq / o->ports) % o->addrs);
    uint16_t sport = (uint16_t)(o->sport + seq % o->ports);
    size_t udp_len = sizeof(struct udphdr) + o->payload;
    /* Fragment data sizes are multiples of 8; the last one takes the rest. */
    size_t per_frag = ((MTU - sizeof(struct iphdr)) / 8) * 8;
    size_t offset = 0;
    int n = 0;
    while (offset < udp_len && n < MAX_FRAGS) {
        size_t chunk = udp_len - offset;
        int more = 0;
        if (o->fragment && chunk > per_frag) {
            chunk = per_frag;
            more = 1;
        }
        uint8_t *f = frames[n];
        memcpy(f, o->dst_mac, 6);
        memcpy(f + 6, o->src_mac, 6);
        f[12] = 0x08;
        f[13] = 0x00;
        struct iphdr *ip = (struct iphdr *)(f + 14);
        memset(ip, 0, sizeof(*ip));
        ip->version = 4;
        ip->ihl = 5;
        ip->tot_len = htons((uint16_t)(sizeof(*ip) + chunk));
        ip->id = htons((uint16_t)seq);
        ip->frag_off = htons((uint16_t)((more ? IP_MF : 0) | (offset / 8)));
        ip->ttl = 64;
        ip->protocol = IPPROTO_UDP;
        ip->saddr = htonl(src);
        ip->daddr = htonl(o->dst_ip);
        ip->check = ip_checksum(ip, sizeof(*ip));
        /* The datagram's bytes [offset, offset + chunk): UDP header, VXLAN header, zeros. */
        uint8_t *data = f + 14 + sizeof(*ip);
        memset(data, 0, chunk);
        if (offset == 0) {
            struct udphdr *udp = (struct udphdr *)data;
            udp->source = htons(sport);
            udp->dest = htons((uint16_t)o->dport);
            udp->len = htons((uint16_t)udp_len);
            udp->check = 0; /* allowed in IPv4, and what VXLAN senders commonly do */
            if (chunk >= sizeof(*udp) + VXLAN_HLEN) {
                uint8_t *vx = data + sizeof(*udp);
                vx[0] = 0x08;      /* flags: VNI present */
                vx[6] = 0x01;      /* VNI 256 (bits 8..31 of the second word) */
            }
        }
        lens[n] = 14 + sizeof(*ip) + chunk;
        offset += chunk;
        n++;
        if (!o->fragment) break;
    }
    return n;
}

int main(int argc, char **argv) {
    struct options o = {.dport = 4789, .sport = 10000, .ports = 50000, .addrs = 1,
                        .payload = VXLAN_HLEN + 64, .batch = 64};
    const char *src_mac = NULL, *dst_mac = NULL, *src_ip = NULL, *dst_ip = NULL;
    int have_count = 0, have_seconds = 0, opt;
    while ((opt = getopt(argc, argv, "i:s:d:S:D:c:t:p:P:n:a:l:fb:")) != -1) {
        switch (opt) {
        case 'i': o.iface = optarg; break;
        case 's': src_mac = optarg; break;
        case 'd': dst_mac = optarg; break;
        case 'S': src_ip = optarg; break;
        case 'D': dst_ip = optarg; break;
        case 'c': o.count = parse_ulong(optarg, "-c COUNT", 1, 1000000000UL); have_count = 1; break;
        case 't': o.seconds = parse_seconds(optarg); have_seconds = 1; break;
        case 'p': o.dport = parse_ulong(optarg, "-p DPORT", 1, 65535); break;
        case 'P': o.sport = parse_ulong(optarg, "-P SPORT", 1, 65535); break;
        case 'n': o.ports = parse_ulong(optarg, "-n PORTS", 1, 65535); break;
        case 'a': o.addrs = parse_ulong(optarg, "-a ADDRS", 1, 256); break;
        case 'l': o.payload = parse_ulong(optarg, "-l UDP_PAYLOAD", VXLAN_HLEN, 8000); break;
        case 'f': o.fragment = 1; break;
        case 'b': o.batch = parse_ulong(optarg, "-b BATCH", 1, MAX_BATCH); break;
        default: die("usage: udpgen -i IFACE -s SRCMAC -d DSTMAC -S SRCIP -D DSTIP -c COUNT "
                     "-t SECONDS [-p DPORT] [-P SPORT] [-n PORTS] [-a ADDRS] [-l LEN] [-f] "
                     "[-b BATCH]");
        }
    }
    if (!o.iface || !src_mac || !dst_mac || !src_ip || !dst_ip || !have_count || !have_seconds)
        die("-i, -s, -d, -S, -D, -c and -t are required (run without arguments for usage)");
    if (o.sport + o.ports - 1 > 65535) die("-P SPORT + -n PORTS must stay within 1..65535");
    if (!o.fragment && sizeof(struct iphdr) + sizeof(struct udphdr) + o.payload > MTU)
        die("-l UDP_PAYLOAD is over the 1500-byte MTU: pass -f to send fragments");
    parse_mac(src_mac, o.src_mac);
    parse_mac(dst_mac, o.dst_mac);
    o.src_ip = parse_ip(src_ip);
    o.dst_ip = parse_ip(dst_ip);

    int fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: send only, receive nothing */
    if (fd < 0) die_errno("socket(AF_PACKET)");
    int one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0)
        die_errno("PACKET_QDISC_BYPASS");
    struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP)};
    ll.sll_ifindex = (int)if_nametoindex(o.iface);
    if (ll.sll_ifindex == 0) die_errno(o.iface);
    if (bind(fd, (struct sockaddr *)&ll, sizeof(ll)) < 0) die_errno("bind");

    /* A batch holds whole datagrams: BATCH datagrams, each up to MAX_FRAGS frames. */
    size_t slots = o.batch * (o.fragment ? MAX_FRAGS : 1);
    uint8_t (*frames)[FRAME_MAX] = calloc(slots, FRAME_MAX);
    size_t *lens = calloc(slots, sizeof(size_t));
    struct iovec *iov = calloc(slots, sizeof(struct iovec));
    struct mmsghdr *msgs = calloc(slots, sizeof(struct mmsghdr));
    if (!frames || !lens || !iov || !msgs) die("out of memory");

    double start = now(), deadline = start + o.seconds;
    unsigned long sent = 0, frame_total = 0;
    while (sent < o.count) {
        unsigned long want = o.count - sent < o.batch ? o.count - sent : o.batch;
        size_t nframes = 0;
        for (unsigned long k = 0; k < want; k++)
            nframes += (size_t)build_datagram(&o, sent + k, &frames[nframes], &lens[nframes]);
        for (size_t k = 0; k < nframes; k++) {
            iov[k].iov_base = frames[k];
            iov[k].iov_len = lens[k];
            memset(&msgs[k].msg_hdr, 0, sizeof(msgs[k].msg_hdr));
            msgs[k].msg_hdr.msg_iov = &iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
        }
        size_t done = 0;
        int stalls = 0;
        while (done < nframes) {
            int r = sendmmsg(fd, msgs + done, (unsigned int)(nframes - done), 0);
            if (r < 0) {
                /* A full device queue: retry a bounded number of times, then give up. */
                if ((errno == ENOBUFS || errno == EAGAIN || errno == EINTR) && ++stalls < 1000) {
                    usleep(50);
                    continue;
                }
                die_errno("sendmmsg");
            }
            done += (size_t)r;
        }
        sent += want;
        frame_total += nframes;
        if (now() >= deadline) break;
    }
    double elapsed = now() - start;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6
                 + (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("sent=%lu frames=%lu seconds=%.6f cpu=%.6f\n", sent, frame_total, elapsed, cpu);
    close(fd);
    return 0;
}
