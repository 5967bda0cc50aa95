/*
 * tlsload — the C end points of the proxy benchmark's tunnel workloads, so that what is measured
 * is the proxy and not node:tls (about 1 ms of CPU per client handshake in Node, 0.5 ms per
 * server handshake: more than any proxy under test spends on a tunnel). Built by bench/proxy.mjs
 * with `cc -O2 tlsload.c -lssl -lcrypto`; the bench falls back to Node clients without it.
 *
 *   tlsload server CERT KEY
 *       TLS origin on 127.0.0.1 (port printed as "PORT\n"): completes handshakes, no session
 *       tickets (so a client's close is a clean FIN), then reads until the peer closes.
 *   tlsload client DIAL_PORT AUTHORITY|- AUTH|- SNI CAFILE CONCURRENCY DURATION_MS
 *       CONCURRENCY loops of: TCP connect to 127.0.0.1:DIAL_PORT, "CONNECT AUTHORITY" with
 *       Proxy-Authorization AUTH (when not "-"), 200, TLS handshake with SNI verified against
 *       CAFILE and SNI, close. AUTHORITY "-" dials the origin directly. Prints one JSON line.
 *   tlsload bulk-server BYTES
 *       TCP origin (port printed): after a client's first bytes, sends BYTES and closes.
 *   tlsload bulk-client DIAL_PORT AUTHORITY|- AUTH|- HELLO_FILE BYTES
 *       One tunnel: CONNECT, send HELLO_FILE (a ClientHello), read until EOF. Prints JSON.
 *
 * Servers exit when stdin closes. Loopback only; every loop ends by count or time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *what) {
  fprintf(stderr, "tlsload: %s: %s\n", what, strerror(errno));
  exit(2);
}

static int listen_loopback(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(fd, 4096) < 0) die("listen");
  socklen_t len = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &len);
  *port = ntohs(a.sin_port);
  return fd;
}

static int dial_loopback(int port, int nonblocking) {
  int fd = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

static int format_connect(char *out, size_t cap, const char *authority, const char *auth) {
  if (strcmp(auth, "-") == 0) return snprintf(out, cap, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority);
  return snprintf(out, cap, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", authority, authority, auth);
}

/* ------------------------------------------------------------------------------------------ */
/* TLS server                                                                                  */

struct sconn {
  int fd;
  SSL *ssl;
  int done;
};

static int run_server(const char *cert, const char *key) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    ERR_print_errors_fp(stderr);
    return 2;
  }
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  int port;
  int lfd = listen_loopback(&port);
  printf("%d\n", port);
  fflush(stdout);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  static struct sconn stdin_marker;
  ev.data.ptr = &stdin_marker;
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
  struct epoll_event events[256];
  char buf[16384];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; i++) {
      struct sconn *c = events[i].data.ptr;
      if (c == &stdin_marker) {
        if (read(0, buf, sizeof buf) <= 0) return 0;
        continue;
      }
      if (c == NULL) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct sconn *s = calloc(1, sizeof *s);
          s->fd = fd;
          s->ssl = SSL_new(ctx);
          SSL_set_fd(s->ssl, fd);
          SSL_set_accept_state(s->ssl);
          struct epoll_event e = {.events = EPOLLIN, .data.ptr = s};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
        }
        continue;
      }
      int closeit = 0;
      if (!c->done) {
        int r = SSL_do_handshake(c->ssl);
        if (r == 1) {
          c->done = 1;
        } else {
          int e = SSL_get_error(c->ssl, r);
          struct epoll_event m = {.events = e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN, .data.ptr = c};
          if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &m);
          else closeit = 1;
          ERR_clear_error();
        }
      }
      if (c->done && !closeit) {
        struct epoll_event m = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &m);
        for (;;) {
          int r = SSL_read(c->ssl, buf, sizeof buf);
          if (r > 0) continue;
          int e = SSL_get_error(c->ssl, r);
          if (e != SSL_ERROR_WANT_READ) closeit = 1;
          ERR_clear_error();
          break;
        }
      }
      if (closeit) {
        SSL_free(c->ssl);
        close(c->fd);
        free(c);
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Tunnel-setup client                                                                         */

enum cstate { C_CONNECTING, C_SENDING, C_READING, C_HANDSHAKE };

struct cconn {
  int fd;
  enum cstate st;
  SSL *ssl;
  size_t sent, got;
  char head[2048];
  double t0;
};

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The client's event loop state (one run per process). */
static int client_ep, client_dial_port;
static double client_stop_at;

/* Starts (or restarts) slot c: 1 started, 0 the run is over, -1 the dial failed. */
static int start_slot(struct cconn *c) {
  if (now_us() >= client_stop_at) return 0;
  memset(c, 0, sizeof *c);
  c->t0 = now_us();
  c->fd = dial_loopback(client_dial_port, 1);
  if (c->fd < 0) return -1;
  c->st = C_CONNECTING;
  struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
  epoll_ctl(client_ep, EPOLL_CTL_ADD, c->fd, &e);
  return 1;
}

static void watch(struct cconn *c, unsigned events) {
  struct epoll_event e = {.events = events, .data.ptr = c};
  epoll_ctl(client_ep, EPOLL_CTL_MOD, c->fd, &e);
}

static int run_client(int dial_port, const char *authority, const char *auth, const char *sni, const char *cafile, int concurrency, int duration_ms) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
    ERR_print_errors_fp(stderr);
    return 2;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  static const unsigned char alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
  int direct = strcmp(authority, "-") == 0;
  char req[4096];
  int reqlen = direct ? 0 : format_connect(req, sizeof req, authority, auth);

  int ep = client_ep = epoll_create1(0);
  client_dial_port = dial_port;
  size_t cap = 1 << 20, count = 0;
  double *lat = malloc(cap * sizeof *lat);
  long errors = 0, incomplete = 0;
  char first_error[256] = "";
  double start = now_us(), stop_at = start + duration_ms * 1000.0, hard_stop = stop_at + 10e6;
  client_stop_at = stop_at;
  struct cconn *conns = calloc(concurrency, sizeof *conns);
  int active = 0;

#define FAIL(c, msg)                                                                 \
  do {                                                                               \
    (void)(c);                                                                       \
    errors++;                                                                        \
    if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s", (msg));     \
    goto reset;                                                                      \
  } while (0)

  for (int i = 0; i < concurrency; i++) {
    int r = start_slot(&conns[i]);
    if (r > 0) active++;
    else if (r < 0) errors++;
  }
  struct epoll_event events[512];
  while (active > 0 && now_us() < hard_stop) {
    int n = epoll_wait(ep, events, 512, 100);
    for (int i = 0; i < n; i++) {
      struct cconn *c = events[i].data.ptr;
      if (c->st == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) FAIL(c, strerror(err));
        c->st = direct ? C_HANDSHAKE : C_SENDING;
      }
      if (c->st == C_SENDING) {
        ssize_t w = write(c->fd, req + c->sent, reqlen - c->sent);
        if (w < 0 && errno != EAGAIN) FAIL(c, "CONNECT write failed");
        if (w > 0) c->sent += w;
        if (c->sent < (size_t)reqlen) {
          watch(c, EPOLLOUT);
          continue;
        }
        c->st = C_READING;
        watch(c, EPOLLIN);
        continue;
      }
      if (c->st == C_READING) {
        ssize_t r = read(c->fd, c->head + c->got, sizeof c->head - 1 - c->got);
        if (r == 0) FAIL(c, "proxy closed before answering CONNECT");
        if (r < 0) {
          if (errno == EAGAIN) continue;
          FAIL(c, strerror(errno));
        }
        c->got += r;
        c->head[c->got] = 0;
        char *end = strstr(c->head, "\r\n\r\n");
        if (end == NULL) {
          if (c->got >= sizeof c->head - 1) FAIL(c, "CONNECT response head too long");
          continue;
        }
        if (strncmp(c->head, "HTTP/1.1 200", 12) != 0 && strncmp(c->head, "HTTP/1.0 200", 12) != 0) {
          char msg[128];
          snprintf(msg, sizeof msg, "CONNECT refused: %.*s", (int)strcspn(c->head, "\r"), c->head);
          FAIL(c, msg);
        }
        c->st = C_HANDSHAKE;
      }
      if (c->st == C_HANDSHAKE) {
        if (c->ssl == NULL) {
          c->ssl = SSL_new(ctx);
          SSL_set_fd(c->ssl, c->fd);
          SSL_set_tlsext_host_name(c->ssl, sni);
          SSL_set1_host(c->ssl, sni);
          SSL_set_connect_state(c->ssl);
        }
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
          int e = SSL_get_error(c->ssl, r);
          if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            watch(c, e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
            ERR_clear_error();
            continue;
          }
          char msg[160];
          unsigned long code = ERR_get_error();
          snprintf(msg, sizeof msg, "TLS handshake failed: %s", code ? ERR_reason_error_string(code) : "connection closed");
          ERR_clear_error();
          FAIL(c, msg);
        }
        if (count == cap) lat = realloc(lat, (cap *= 2) * sizeof *lat);
        lat[count++] = now_us() - c->t0;
      }
    reset:
      if (c->ssl) SSL_free(c->ssl);
      close(c->fd);
      c->ssl = NULL;
      {
        int r = start_slot(c);
        if (r == 0) active--;
        else if (r < 0) {
          errors++;
          active--;
        }
      }
    }
  }
  incomplete = active;
  double seconds = (now_us() - start) / 1e6;
  qsort(lat, count, sizeof *lat, cmp_double);
  double p50 = count ? lat[(size_t)(count * 0.5)] : 0, p99 = count ? lat[count - 1 < (size_t)(count * 0.99) ? count - 1 : (size_t)(count * 0.99)] : 0;
  printf("{\"count\":%zu,\"seconds\":%.6f,\"errors\":%ld,\"incomplete\":%ld,\"p50Us\":%.1f,\"p99Us\":%.1f,\"firstError\":\"%s\"}\n", count, seconds, errors, incomplete, p50,
         p99, first_error);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Bulk                                                                                        */

static int run_bulk_server(long long bytes) {
  int port;
  int lfd = listen_loopback(&port);
  printf("%d\n", port);
  fflush(stdout);
  static char chunk[1 << 20];
  memset(chunk, 'a', sizeof chunk);
  char buf[16384];
  for (;;) {
    struct pollfd p[2] = {{.fd = lfd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    if (poll(p, 2, -1) < 0) continue;
    if (p[1].revents) {
      if (read(0, buf, sizeof buf) <= 0) return 0;
    }
    if (!(p[0].revents & POLLIN)) continue;
    int fd = accept4(lfd, NULL, NULL, 0);
    if (fd < 0) continue;
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (read(fd, buf, sizeof buf) > 0) {
      long long left = bytes;
      while (left > 0) {
        ssize_t w = write(fd, chunk, left < (long long)sizeof chunk ? (size_t)left : sizeof chunk);
        if (w <= 0) break;
        left -= w;
      }
    }
    shutdown(fd, SHUT_WR);
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
  }
}

static int run_bulk_client(int dial_port, const char *authority, const char *auth, const char *hello_file, long long bytes) {
  char hello[16384];
  FILE *f = fopen(hello_file, "rb");
  if (!f) die("hello file");
  size_t hlen = fread(hello, 1, sizeof hello, f);
  fclose(f);
  int fd = dial_loopback(dial_port, 0);
  if (fd < 0) die("connect");
  struct timeval tv = {.tv_sec = 60};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  static char buf[1 << 20];
  double t0 = now_us();
  if (strcmp(authority, "-") != 0) {
    char req[4096];
    int n = format_connect(req, sizeof req, authority, auth);
    if (write(fd, req, n) != n) die("CONNECT write");
    size_t got = 0;
    for (;;) {
      ssize_t r = read(fd, buf + got, 4096 - got);
      if (r <= 0) {
        printf("{\"error\":\"proxy closed before answering CONNECT\"}\n");
        return 0;
      }
      got += r;
      buf[got] = 0;
      if (strstr(buf, "\r\n\r\n")) break;
      if (got >= 4096) break;
    }
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0 && strncmp(buf, "HTTP/1.0 200", 12) != 0) {
      printf("{\"error\":\"CONNECT refused: %.*s\"}\n", (int)strcspn(buf, "\r"), buf);
      return 0;
    }
  }
  double t1 = now_us();
  if (write(fd, hello, hlen) != (ssize_t)hlen) die("hello write");
  long long total = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r <= 0) break;
    total += r;
  }
  double t2 = now_us();
  close(fd);
  printf("{\"bytes\":%lld,\"expected\":%lld,\"setupUs\":%.1f,\"seconds\":%.6f}\n", total, bytes, t1 - t0, (t2 - t1) / 1e6);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 4 && strcmp(argv[1], "server") == 0) return run_server(argv[2], argv[3]);
  if (argc >= 9 && strcmp(argv[1], "client") == 0)
    return run_client(atoi(argv[2]), argv[3], argv[4], argv[5], argv[6], atoi(argv[7]), atoi(argv[8]));
  if (argc >= 3 && strcmp(argv[1], "bulk-server") == 0) return run_bulk_server(atoll(argv[2]));
  if (argc >= 7 && strcmp(argv[1], "bulk-client") == 0) return run_bulk_client(atoi(argv[2]), argv[3], argv[4], argv[5], atoll(argv[6]));
  fprintf(stderr, "usage: see the comment at the top of tlsload.c\n");
  return 2;
}
