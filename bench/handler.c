/* The per-connection program of the benchmark: write one line on stdout and exit. Built static. */
#include <unistd.h>
int main(void) {
  static const char line[] = "hello from the handler\n";
  return write(1, line, sizeof line - 1) == (ssize_t)(sizeof line - 1) ? 0 : 1;
}
