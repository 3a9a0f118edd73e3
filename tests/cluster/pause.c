/* The sandbox ("pause") process of every pod of the test cluster, and the
 * process that holds the node's network and mount namespaces open.
 * Built static by scripts/image (gcc -static), so its image holds one file.
 * Waits for signals: SIGINT/SIGTERM exit 0, SIGCHLD reaps (it is PID 1 of
 * the pod's PID namespace when the pod shares it). `pause -v` prints a version. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

static void on_chld(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  struct sigaction sa;
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("pause (webhook-relay test cluster) 1");
    return 0;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_chld;
  sa.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);
  for (;;) pause();
}
