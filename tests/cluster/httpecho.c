/* httpecho: a tiny static HTTP/1.x server and client for the test cluster's
 * images (no libc beyond what `gcc -static` links; scripts/image httpecho).
 *
 *   httpecho serve [PORT]                    answer every request (default port 8080)
 *   httpecho get ADDR PORT PATH [HOST]       one GET (Host: HOST, default ADDR); prints
 *                                            the response; exit 0 on status 200, else 1
 *
 * The server answers 200 with a text body naming itself and the request:
 *   httpecho <hostname>\nmethod M\npath P\nhost H\nx-forwarded-proto X\nbody-bytes N\n
 * (a request body, by Content-Length, is read and counted). One child process per
 * connection, `Connection: close`, 10 s socket timeouts; SIGTERM/SIGINT exit 0 (it is
 * a container's PID 1).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAXREQ 16384

static void on_term(int sig) { (void)sig; _exit(0); }

static void timeouts(int fd) {
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* value of header `name` in the header block (case-insensitive), copied to out */
static void header(const char *hdrs, const char *name, char *out, size_t outsz) {
  size_t nl = strlen(name);
  const char *p = hdrs;
  out[0] = '\0';
  while ((p = strstr(p, "\r\n")) != NULL) {
    p += 2;
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      const char *v = p + nl + 1, *e;
      while (*v == ' ' || *v == '\t') v++;
      e = strstr(v, "\r\n");
      if (!e) e = v + strlen(v);
      size_t n = (size_t)(e - v) < outsz - 1 ? (size_t)(e - v) : outsz - 1;
      memcpy(out, v, n);
      out[n] = '\0';
      return;
    }
  }
}

static void serve_conn(int c) {
  char buf[MAXREQ + 1], method[16] = "", path[2048] = "", host[256], proto[64], clen[32];
  char body[4096 + MAXREQ], me[256] = "?";
  size_t got = 0;
  char *end = NULL;
  timeouts(c);
  while (got < MAXREQ) {
    ssize_t r = read(c, buf + got, MAXREQ - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    got += (size_t)r;
    buf[got] = '\0';
    if ((end = strstr(buf, "\r\n\r\n")) != NULL) break;
  }
  if (!end) return;
  end[2] = '\0'; /* header block ends with the last header's CRLF */
  if (sscanf(buf, "%15s %2047s", method, path) != 2) return;
  header(buf, "Host", host, sizeof host);
  header(buf, "X-Forwarded-Proto", proto, sizeof proto);
  header(buf, "Content-Length", clen, sizeof clen);
  long want = clen[0] ? strtol(clen, NULL, 10) : 0, have = (long)(got - (size_t)(end + 4 - buf));
  while (have < want) {
    ssize_t r = read(c, buf, MAXREQ);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    have += r;
  }
  gethostname(me, sizeof me - 1);
  int n = snprintf(body, sizeof body,
                   "httpecho %s\nmethod %s\npath %s\nhost %s\nx-forwarded-proto %s\nbody-bytes %ld\n",
                   me, method, path, host, proto, have);
  char head[256];
  int h = snprintf(head, sizeof head,
                   "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                   "Connection: close\r\n\r\n",
                   n);
  if (write_all(c, head, (size_t)h) == 0 && strcmp(method, "HEAD") != 0) write_all(c, body, (size_t)n);
  shutdown(c, SHUT_WR);
}

static int serve(int port) {
  int s = socket(AF_INET6, SOCK_STREAM, 0), one = 1, zero = 0;
  struct sockaddr_in6 a;
  if (s < 0) { perror("socket"); return 1; }
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero); /* v4 and v6 */
  memset(&a, 0, sizeof a);
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_any;
  a.sin6_port = htons((unsigned short)port);
  if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
  if (listen(s, 64) < 0) { perror("listen"); return 1; }
  fprintf(stderr, "httpecho: listening on port %d\n", port);
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR) continue;
      perror("accept");
      continue;
    }
    pid_t p = fork();
    if (p == 0) {
      close(s);
      serve_conn(c);
      close(c);
      _exit(0);
    }
    close(c);
  }
}

static int get(const char *addr, const char *port, const char *path, const char *host) {
  struct addrinfo hints, *res, *ai;
  int fd = -1, e;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  if ((e = getaddrinfo(addr, port, &hints, &res)) != 0) {
    fprintf(stderr, "httpecho: %s: %s\n", addr, gai_strerror(e));
    return 2;
  }
  for (ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) continue;
    timeouts(fd);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) { fprintf(stderr, "httpecho: cannot connect to %s:%s: %s\n", addr, port, strerror(errno)); return 2; }
  char req[4096];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: httpecho\r\nConnection: close\r\n\r\n",
                   path, host);
  if (write_all(fd, req, (size_t)n) < 0) { perror("write"); return 2; }
  char buf[8192], first[64] = "";
  size_t firstlen = 0;
  ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) != 0) {
    if (r < 0) {
      if (errno == EINTR) continue;
      perror("read");
      return 2;
    }
    if (firstlen < sizeof first - 1) {
      size_t k = (size_t)r < sizeof first - 1 - firstlen ? (size_t)r : sizeof first - 1 - firstlen;
      memcpy(first + firstlen, buf, k);
      firstlen += k;
      first[firstlen] = '\0';
    }
    fwrite(buf, 1, (size_t)r, stdout);
  }
  fflush(stdout);
  close(fd);
  return strncmp(first, "HTTP/1.1 200", 12) == 0 || strncmp(first, "HTTP/1.0 200", 12) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && strcmp(argv[1], "serve") == 0) return serve(argc >= 3 ? atoi(argv[2]) : 8080);
  if (argc >= 5 && strcmp(argv[1], "get") == 0) return get(argv[2], argv[3], argv[4], argc >= 6 ? argv[5] : argv[2]);
  fprintf(stderr, "usage: httpecho serve [PORT] | httpecho get ADDR PORT PATH [HOST]\n");
  return 2;
}
