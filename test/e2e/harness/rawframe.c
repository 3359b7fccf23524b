/*
 * rawframe: what an attacker in a container needs, and what its victim needs to see what arrived.
 * Built statically into the end-to-end test image (no library in the busybox image); runs with
 * CAP_NET_RAW, which Docker gives every container by default.
 *
 *   rawframe send IFACE HEX [HEX...]       sends each frame (Ethernet header included) as it is
 *   rawframe capture IFACE MILLISECONDS    prints "ready", then every frame that arrives on IFACE
 *                                          (not those it sends) as one line of hex, then "done";
 *                                          an 802.1Q tag the kernel took off is put back in its place
 *
 * The frames are built and read by the tests (test/e2e/harness/frames.ts): this program only moves
 * bytes, so that what is tested is the network, not a packet library.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int open_socket(const char *iface, struct sockaddr_ll *addr) {
  int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
  if (fd < 0) {
    perror("socket(AF_PACKET)");
    exit(2);
  }
  memset(addr, 0, sizeof *addr);
  addr->sll_family = AF_PACKET;
  addr->sll_protocol = htons(ETH_P_ALL);
  addr->sll_ifindex = (int)if_nametoindex(iface);
  if (addr->sll_ifindex == 0) {
    fprintf(stderr, "no interface %s\n", iface);
    exit(2);
  }
  if (bind(fd, (struct sockaddr *)addr, sizeof *addr) < 0) {
    perror("bind");
    exit(2);
  }
  return fd;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int send_frames(const char *iface, int count, char **frames) {
  struct sockaddr_ll addr;
  int fd = open_socket(iface, &addr);
  unsigned char buf[9216];
  for (int i = 0; i < count; i++) {
    size_t len = strlen(frames[i]);
    if (len % 2 != 0 || len / 2 > sizeof buf || len < 28) {
      fprintf(stderr, "frame %d: not a frame in hex\n", i);
      return 2;
    }
    for (size_t j = 0; j < len / 2; j++) {
      int hi = hex_value(frames[i][2 * j]), lo = hex_value(frames[i][2 * j + 1]);
      if (hi < 0 || lo < 0) {
        fprintf(stderr, "frame %d: not hex\n", i);
        return 2;
      }
      buf[j] = (unsigned char)(hi << 4 | lo);
    }
    if (sendto(fd, buf, len / 2, 0, (struct sockaddr *)&addr, sizeof addr) < 0) {
      perror("sendto");
      return 1;
    }
  }
  return 0;
}

static int capture(const char *iface, long long ms) {
  struct sockaddr_ll addr;
  int fd = open_socket(iface, &addr);
  int on = 1;
  /* The kernel strips a received VLAN tag into the packet's metadata: ask for it to show the frame whole. */
  if (setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &on, sizeof on) < 0) {
    perror("PACKET_AUXDATA");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready\n");
  long long end = now_ms() + ms;
  unsigned char buf[65536];
  char control[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
  for (;;) {
    long long left = end - now_ms();
    if (left <= 0) break;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, (int)left);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) break;
    struct sockaddr_ll from;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr msg = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    ssize_t n = recvmsg(fd, &msg, 0);
    if (n <= 0 || from.sll_pkttype == PACKET_OUTGOING) continue;
    int tagged = 0;
    unsigned short tpid = 0x8100, tci = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
      struct tpacket_auxdata aux;
      memcpy(&aux, CMSG_DATA(c), sizeof aux);
      if (aux.tp_status & TP_STATUS_VLAN_VALID) {
        tagged = 1;
        tci = aux.tp_vlan_tci;
        if (aux.tp_status & TP_STATUS_VLAN_TPID_VALID) tpid = aux.tp_vlan_tpid;
      }
    }
    for (ssize_t i = 0; i < n; i++) {
      if (i == 12 && tagged) printf("%04x%04x", tpid, tci);
      printf("%02x", buf[i]);
    }
    printf("\n");
  }
  printf("done\n");
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "send") == 0) return send_frames(argv[2], argc - 3, argv + 3);
  if (argc == 4 && strcmp(argv[1], "capture") == 0) return capture(argv[2], atoll(argv[3]));
  fprintf(stderr, "usage: rawframe send IFACE HEX...  |  rawframe capture IFACE MILLISECONDS\n");
  return 2;
}
