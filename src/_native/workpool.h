/* A small persistent thread pool that never makes its caller wait for a thread that is not running.
 *
 * pool_run(fn, ctx, n, threads) calls fn(ctx, chunk, slot) once for every chunk in 0..n-1 and
 * returns when all have run. The calling thread takes chunks itself, from the same atomic counter
 * as the workers, so work nobody has claimed yet is done by the caller; at the end it waits only
 * for chunks a worker has already claimed and is running. A worker the OS has not scheduled (the
 * other core is busy with an encoder) therefore costs nothing: only one descheduled in the middle
 * of a chunk (a few microseconds of work) can hold the caller. (OpenMP's join barrier instead
 * waits for every thread of the team to arrive, woken or not: a stall of a scheduler time slice.)
 *
 * slot is 0 for the caller and 1..threads-1 for workers (at most pool_slots(threads) slots); no
 * two chunks run at the same time on one slot, so per-slot scratch memory needs no locking.
 *
 * The job's generation, chunk count and next chunk live in one 64-bit word: a worker claims a chunk
 * with a compare-and-swap on it, so a worker that wakes late can never claim a chunk of a job that
 * has finished, and it reads the job's function only after claiming, while the job is still
 * running. Idle workers spin for a quarter of a millisecond (back-to-back calls) and then sleep on
 * a condition variable; so does the caller, after 20 us, when workers still run its last chunks.
 * Workers are SCHED_BATCH threads on Linux: woken on the caller's own CPU (the other one being
 * busy) they wait their turn instead of preempting the caller.
 * A worker descheduled in the middle of a chunk can still hold the caller for a time slice; when
 * that happens (see POOL_STALL_NS) the next calls run on the caller alone for a while.
 * One job at a time: a call made while the pool is busy (another Python thread compositing) runs
 * on its own thread. After fork() the child starts without workers.
 *
 * Without C11 atomics or POSIX threads (or with SKYMIX_SERIAL defined) pool_run is a plain loop.
 */
#ifndef SKYMIX_WORKPOOL_H
#define SKYMIX_WORKPOOL_H

#include <stdint.h>

typedef void (*pool_fn)(void *ctx, int chunk, int slot);

#if !defined(SKYMIX_SERIAL) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && \
    !defined(__STDC_NO_ATOMICS__) && (defined(__unix__) || defined(__APPLE__))
#define SKYMIX_POOL_THREADS 1
#else
#define SKYMIX_POOL_THREADS 0
#endif

#define POOL_MAX_WORKERS 63

#if SKYMIX_POOL_THREADS
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

/* word: generation (24 bits) | chunk count (20 bits) | next chunk (20 bits) */
#define POOL_IDX_BITS 20
#define POOL_MAX_CHUNKS ((1 << POOL_IDX_BITS) - 1)
#define POOL_IDX(w) ((int)((w) & POOL_MAX_CHUNKS))
#define POOL_N(w) ((int)(((w) >> POOL_IDX_BITS) & POOL_MAX_CHUNKS))
#define POOL_GEN(w) ((w) >> (2 * POOL_IDX_BITS))
/* how long an idle worker spins for the next job before it sleeps (waking a sleeping thread takes
   40 us to 0.7 ms on a virtual machine), and how long the caller spins for running chunks */
#define POOL_SPIN_NS 250000
#define POOL_WAIT_SPIN_NS 20000
/* a wait for workers longer than this, and longer than the caller's own share of the work, is a
   stall: the next pool.skip calls run serially, a pause that doubles with each stall (up to
   POOL_MAX_SKIP calls) and halves with each call that does not stall */
#define POOL_STALL_NS 300000
#define POOL_MAX_SKIP 256

static struct {
    _Atomic uint64_t word;
    _Atomic int done;          /* chunks of the current job finished */
    _Atomic int limit;         /* slots the current job may use (workers >= limit sit it out) */
    _Atomic int sleepers;
    _Atomic int waiting;       /* the caller sleeps until the job's last chunk is done */
    atomic_flag busy;          /* a job is running */
    pool_fn fn;                /* written before the job is published, read after a claim */
    void *ctx;
    int workers;               /* started so far (only the job's caller changes it) */
    int skip;                  /* calls to run serially after a stall, and the next such pause */
    int backoff;
    pthread_mutex_t lock;
    pthread_cond_t wake;       /* workers: a new job */
    pthread_cond_t finished;   /* the caller: the last chunk is done */
} pool = {0, 0, 0, 0, 0, ATOMIC_FLAG_INIT, 0, 0, 0, 0, 1, PTHREAD_MUTEX_INITIALIZER,
          PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

static inline void pool_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int64_t pool_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Claim and run chunks of job `gen` until none is left; returns how many this thread ran. */
static int pool_work(uint64_t gen, int slot)
{
    uint64_t w = atomic_load_explicit(&pool.word, memory_order_acquire);
    int ran = 0;
    while (POOL_GEN(w) == gen && POOL_IDX(w) < POOL_N(w)) {
        if (atomic_compare_exchange_weak_explicit(&pool.word, &w, w + 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            /* the job cannot finish before this chunk is counted done: fn and ctx are its own */
            pool.fn(pool.ctx, POOL_IDX(w), slot);
            ran++;
            if (atomic_fetch_add(&pool.done, 1) + 1 == POOL_N(w) && slot > 0 &&
                atomic_load(&pool.waiting)) {
                pthread_mutex_lock(&pool.lock);
                pthread_cond_signal(&pool.finished);
                pthread_mutex_unlock(&pool.lock);
            }
            w = atomic_load_explicit(&pool.word, memory_order_acquire);
        }
    }
    return ran;
}

static void *pool_worker(void *arg)
{
    int slot = (int)(intptr_t)arg;
    uint64_t seen = POOL_GEN(atomic_load_explicit(&pool.word, memory_order_acquire)), w;
    int64_t until;
    int i;
#ifdef SCHED_BATCH
    /* Linux wakes a thread on its waker's CPU when that looks cheaper, and a thread that slept
       long preempts the one running there: the caller would sit out its own call while the
       worker does all of it. Batch threads do not preempt on wake-up. */
    struct sched_param param = {0};
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);
#endif
    for (;;) {
        /* wait for a new job: spin a little, then sleep */
        w = atomic_load_explicit(&pool.word, memory_order_acquire);
        until = pool_now_ns() + POOL_SPIN_NS;
        while (POOL_GEN(w) == seen) {
            for (i = 0; i < 64 && POOL_GEN(w) == seen; i++) {
                pool_pause();
                w = atomic_load_explicit(&pool.word, memory_order_acquire);
            }
            if (POOL_GEN(w) != seen || pool_now_ns() < until)
                continue;
            pthread_mutex_lock(&pool.lock);
            atomic_fetch_add(&pool.sleepers, 1);
            while (POOL_GEN(w = atomic_load(&pool.word)) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = POOL_GEN(w);
        /* limit is the new job's (stored before the word), or a later job's when this one has
           ended, and then pool_work finds nothing to claim */
        if (slot < atomic_load_explicit(&pool.limit, memory_order_relaxed))
            pool_work(seen, slot);
    }
    return NULL;
}

static void pool_after_fork(void)
{
    /* only the forking thread exists in the child */
    pool.workers = 0;
    atomic_store(&pool.sleepers, 0);
    atomic_store(&pool.waiting, 0);
    atomic_flag_clear(&pool.busy);
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.finished, NULL);
}

static void pool_init(void)
{
    pthread_atfork(NULL, NULL, pool_after_fork);
}

static int pool_slots(int threads)
{
    return threads < 1 ? 1 : (threads > POOL_MAX_WORKERS + 1 ? POOL_MAX_WORKERS + 1 : threads);
}

static void pool_serial(pool_fn fn, void *ctx, int n)
{
    int c;
    for (c = 0; c < n; c++)
        fn(ctx, c, 0);
}

/* Run fn on chunks 0..n-1 with up to `threads` threads (the caller included); see the top. */
static void pool_run(pool_fn fn, void *ctx, int n, int threads)
{
    pthread_attr_t attr;
    pthread_t tid;
    uint64_t w, gen;
    int64_t until, start, now;
    int ran, spins = 0;
    if (threads > POOL_MAX_WORKERS + 1)
        threads = POOL_MAX_WORKERS + 1;
    if (threads <= 1 || n <= 1 || n > POOL_MAX_CHUNKS ||
        atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire)) {
        pool_serial(fn, ctx, n);
        return;
    }
    if (pool.skip > 0) {
        pool.skip--;
        atomic_flag_clear_explicit(&pool.busy, memory_order_release);
        pool_serial(fn, ctx, n);
        return;
    }
    if (pool.workers < threads - 1) {
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 1 << 20);
        while (pool.workers < threads - 1 &&
               pthread_create(&tid, &attr, pool_worker, (void *)(intptr_t)(pool.workers + 1)) == 0)
            pool.workers++;
        pthread_attr_destroy(&attr);
    }
    pool.fn = fn;
    pool.ctx = ctx;
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.limit, threads, memory_order_relaxed);
    w = atomic_load_explicit(&pool.word, memory_order_relaxed);
    gen = (POOL_GEN(w) + 1) & ((1 << (64 - 2 * POOL_IDX_BITS)) - 1);
    atomic_store(&pool.word, (gen << (2 * POOL_IDX_BITS)) | ((uint64_t)n << POOL_IDX_BITS));
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    start = pool_now_ns();
    ran = pool_work(gen, 0);
    start = (now = pool_now_ns()) - start;
    /* Every chunk is claimed now: wait for those workers are still running. Spin briefly, then
       sleep rather than yield: an idle core lets the scheduler move a descheduled worker here. */
    until = pool_now_ns() + POOL_WAIT_SPIN_NS;
    while (atomic_load_explicit(&pool.done, memory_order_acquire) < n) {
        pool_pause();
        if ((++spins & 63) == 0 && pool_now_ns() > until) {
            pthread_mutex_lock(&pool.lock);
            atomic_store(&pool.waiting, 1);
            while (atomic_load(&pool.done) < n)
                pthread_cond_wait(&pool.finished, &pool.lock);
            atomic_store(&pool.waiting, 0);
            pthread_mutex_unlock(&pool.lock);
        }
    }
    (void)ran;
    now = pool_now_ns() - now;
    if (now > POOL_STALL_NS && now > start) {
        pool.skip = pool.backoff;
        pool.backoff = pool.backoff * 2 > POOL_MAX_SKIP ? POOL_MAX_SKIP : pool.backoff * 2;
    } else if (pool.backoff > 1) {
        pool.backoff /= 2;
    }
    atomic_flag_clear_explicit(&pool.busy, memory_order_release);
}

#else /* serial build */

#define POOL_MAX_CHUNKS 0x7fffffff

static void pool_init(void) {}

static int pool_slots(int threads)
{
    (void)threads;
    return 1;
}

static void pool_run(pool_fn fn, void *ctx, int n, int threads)
{
    int c;
    (void)threads;
    for (c = 0; c < n; c++)
        fn(ctx, c, 0);
}

#endif

#endif
