/* A minimal unit-test harness: each case prints "ok NAME" or "FAIL NAME: why",
 * the format tests/run.sh counts. */
#ifndef REMORA_TEST_CHECK_H
#define REMORA_TEST_CHECK_H
#include <stdio.h>
#include <stdlib.h>

static int check_failed_;     /* failures in the running case */
static int check_total_fail_; /* failed cases in this binary */

#define CHECK(cond) do { if (!(cond)) { \
    printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
    check_failed_++; } } while (0)

#define CHECK_EQ(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
    if (a_ != b_) { printf("  %s:%d: %s == %lld, expected %s == %lld\n", \
        __FILE__, __LINE__, #a, a_, #b, b_); check_failed_++; } } while (0)

#define RUN(fn) do { \
    check_failed_ = 0; \
    fn(); \
    if (check_failed_) { printf("FAIL %s: %d check(s)\n", #fn, check_failed_); check_total_fail_++; } \
    else { printf("ok %s\n", #fn); } \
    fflush(stdout); \
  } while (0)

#define CHECK_DONE() (check_total_fail_ ? 1 : 0)
#endif
