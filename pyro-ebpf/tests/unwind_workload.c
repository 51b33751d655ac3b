#include <stdio.h>
#include <time.h>
volatile unsigned long sink;
static double spent[3];
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
/* Frameless leaves: no locals, no stack. */
__attribute__((noinline)) void leaf_alpha(long n) { for (long i = 0; i < n; i++) sink += i; }
__attribute__((noinline)) void leaf_beta(long n) { for (long i = 0; i < n; i++) sink ^= i; }
__attribute__((noinline)) void leaf_gamma(long n) { for (long i = 0; i < n; i++) sink += 3 * i; }
/* The increments after the calls keep them calls (not tail jumps). */
__attribute__((noinline)) void mid_alpha(long n) { leaf_alpha(n); sink++; }
__attribute__((noinline)) void path_alpha(long n) { mid_alpha(n); sink++; }
__attribute__((noinline)) void path_beta(long n) { leaf_beta(n); sink++; }
__attribute__((noinline)) void path_gamma(long n) { leaf_gamma(n); sink++; }
int main(int argc, char **argv) {
    double seconds = 12, t;
    if (argc > 1) sscanf(argv[1], "%lf", &seconds);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    const long unit = 1000000;
    double start = cpu_now();
    while (cpu_now() - start < seconds) {
        t = cpu_now(); path_alpha(1 * unit); spent[0] += cpu_now() - t;
        t = cpu_now(); path_beta(2 * unit); spent[1] += cpu_now() - t;
        t = cpu_now(); path_gamma(3 * unit); spent[2] += cpu_now() - t;
    }
    printf("%f %f %f\n", spent[0], spent[1], spent[2]);
    return 0;
}
