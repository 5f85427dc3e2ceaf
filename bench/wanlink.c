/* A user-space WAN link for the bench and the WAN spec (the kernel here has no netem): moves IP packets
 * between two TUN devices (IFF_TUN|IFF_NO_PI) through one timed queue per direction. Each device is
 * created inside its network namespace (setns before TUNSETIFF), so none ever exists in the host's.
 *   wanlink <netnsA> <netnsB> <tun name> <one-way delay ms> <loss %> <rate Mbit/s, 0 = unlimited> <queue KiB> <seed>
 * Each packet is dropped with probability loss (seeded PRNG, so a run can be repeated), then waits for
 * the link to serialise it at `rate` (tail drop when more than `queue` KiB wait), then for the delay.
 * Prints "ready" once both devices exist; exits on SIGINT/SIGTERM or when stdin closes (the parent
 * died), and the kernel removes both devices with the process. Compiled by bench/wan-lab.ts. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 16384 /* packets held per direction (24 MiB of 1500-byte packets), a bound on memory */
#define MAXPKT 2048
/* The link is serviced at most once per TICK (like a NIC's interrupt moderation, typically 50–125 µs):
 * packets that arrive or fall due within one tick move in one batch. Without it a sender whose packets
 * are spread out (WebRTC's SCTP, one datagram per syscall, ACK-clocked) cost this process one timer
 * wake-up per packet: at 40 ms RTT the link burned 67 ms of CPU per MiB of tunnel traffic against 9 for
 * TCP's bursts, on the same two cores as the processes being measured. A tick adds at most TICK to a
 * packet's delay (0.25 % of a 40 ms round trip). */
#define TICK_NS 100000ull

struct packet { uint64_t due; uint16_t len; unsigned char data[MAXPKT]; };
struct lane { int from, to; struct packet *ring; unsigned head, tail; uint64_t link_free, lost, tail_dropped, ring_dropped; };

static volatile sig_atomic_t stop;
static uint64_t delay_ns, rate_bps, queue_bytes, loss_threshold, rng;

static void on_signal(int sig) { (void)sig; stop = 1; }

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t next_random(void) { /* xorshift64 */
  rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
  return rng;
}

static int open_tun(const char *netns, const char *name) {
  char path[512];
  snprintf(path, sizeof path, "/var/run/netns/%s", netns);
  int nsfd = open(path, O_RDONLY);
  if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) { perror(path); exit(1); }
  close(nsfd);
  struct ifreq ifr;
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
  if (fd < 0) { perror("/dev/net/tun"); exit(1); }
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); exit(1); }
  return fd;
}

/* Read every packet waiting on lane->from and schedule (or drop) it. */
static void admit(struct lane *lane) {
  for (;;) {
    if (lane->tail - lane->head >= SLOTS) { /* ring full: read and drop, so the device never blocks */
      unsigned char sink[MAXPKT];
      if (read(lane->from, sink, sizeof sink) < 0) return;
      lane->ring_dropped++;
      continue;
    }
    struct packet *p = &lane->ring[lane->tail % SLOTS];
    ssize_t n = read(lane->from, p->data, MAXPKT);
    if (n <= 0) return;
    if (loss_threshold && next_random() < loss_threshold) { lane->lost++; continue; }
    uint64_t t = now_ns(), leave = t;
    if (rate_bps) {
      uint64_t start = lane->link_free > t ? lane->link_free : t;
      if ((start - t) * rate_bps / 8000000000ull > queue_bytes) { lane->tail_dropped++; continue; }
      leave = start + (uint64_t)n * 8000000000ull / rate_bps;
      lane->link_free = leave;
    }
    p->len = (uint16_t)n;
    p->due = leave + delay_ns;
    lane->tail++;
  }
}

/* Write every packet whose time has come; return ns until the next one is due (or -1). */
static int64_t release(struct lane *lane) {
  uint64_t t = now_ns();
  while (lane->head != lane->tail) {
    struct packet *p = &lane->ring[lane->head % SLOTS];
    if (p->due > t) return (int64_t)(p->due - t);
    if (write(lane->to, p->data, p->len) < 0 && errno != EAGAIN && errno != EIO && errno != EBADFD) perror("write");
    lane->head++;
  }
  return -1;
}

int main(int argc, char **argv) {
  if (argc != 9) {
    fprintf(stderr, "usage: wanlink netnsA netnsB tun delay_ms loss_pct rate_mbit queue_kib seed\n");
    return 2;
  }
  delay_ns = (uint64_t)(atof(argv[4]) * 1e6);
  loss_threshold = (uint64_t)(atof(argv[5]) / 100.0 * 18446744073709551615.0);
  rate_bps = (uint64_t)(atof(argv[6]) * 1e6);
  queue_bytes = (uint64_t)atoll(argv[7]) * 1024;
  rng = (uint64_t)atoll(argv[8]) * 2654435761ull + 88172645463325252ull;
  prctl(PR_SET_TIMERSLACK, 1UL); /* wake at the packet's due time, not up to 50 µs later */
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  struct lane lanes[2] = { { .from = open_tun(argv[1], argv[3]) }, { .from = 0 } };
  lanes[1].from = open_tun(argv[2], argv[3]);
  lanes[0].to = lanes[1].from;
  lanes[1].to = lanes[0].from;
  for (int i = 0; i < 2; i++)
    if (!(lanes[i].ring = malloc(sizeof(struct packet) * SLOTS))) { perror("malloc"); return 1; }
  printf("ready\n");
  fflush(stdout);
  struct pollfd fds[3] = { { lanes[0].from, POLLIN, 0 }, { lanes[1].from, POLLIN, 0 }, { 0, POLLIN, 0 } };
  uint64_t serviced = 0;
  while (!stop) {
    uint64_t t = now_ns();
    if (t - serviced < TICK_NS) {
      struct timespec nap = { 0, (long)(serviced + TICK_NS - t) };
      nanosleep(&nap, NULL);
    }
    serviced = now_ns();
    for (int i = 0; i < 2; i++) admit(&lanes[i]);
    int64_t wait = -1;
    for (int i = 0; i < 2; i++) {
      int64_t next = release(&lanes[i]);
      if (next >= 0 && (wait < 0 || next < wait)) wait = next;
    }
    struct timespec timeout = { wait / 1000000000, wait % 1000000000 };
    int ready = ppoll(fds, 3, wait < 0 ? NULL : &timeout, NULL);
    if (ready < 0) { if (errno == EINTR) continue; perror("ppoll"); return 1; }
    if (fds[2].revents) { /* stdin readable means EOF or junk: the parent is gone */
      char buf[64];
      if (read(0, buf, sizeof buf) <= 0) break;
    }
  }
  for (int i = 0; i < 2; i++)
    fprintf(stderr, "wanlink %s->%s: dropped %llu at random, %llu at the queue, %llu with the ring full\n", argv[1 + i], argv[2 - i],
            (unsigned long long)lanes[i].lost, (unsigned long long)lanes[i].tail_dropped, (unsigned long long)lanes[i].ring_dropped);
  return 0;
}
