"""CPython's multiprocessing on the workloads of `cargo xtask bench`; one JSON line per workload."""
import json
import multiprocessing as mp
import os
import statistics
import sys
import time


def noop():
    pass


def report(workload, value, unit):
    print(json.dumps({"workload": workload, "impl": "cpython", "value": round(value, 3), "unit": unit}), flush=True)


def micros_per_op(n, op):
    op()  # warm up
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            op()
        rounds.append((time.perf_counter() - start) * 1e6 / n)
    return statistics.median(rounds)


def start_join(ctx):
    def op():
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    return op


def group_process():
    for method, n in (("fork", 200), ("spawn", 20), ("forkserver", 50)):
        report(f"spawn_join_{method}", micros_per_op(n, start_join(mp.get_context(method))), "us")


def hammer(lock, n):
    for _ in range(n):
        lock.acquire()
        lock.release()


def increment(value, n):
    for _ in range(n):
        with value.get_lock():
            value.value += 1


def write_all(name, size):
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(name=name)
    chunk = b"\x5a" * (1 << 20)
    for offset in range(0, size, len(chunk)):
        shm.buf[offset:offset + len(chunk)] = chunk
    shm.close()


def two(ctx, target, args):
    procs = [ctx.Process(target=target, args=args) for _ in range(2)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return time.perf_counter() - start


def group_sync():
    from multiprocessing import shared_memory
    ctx = mp.get_context("fork")
    lock = ctx.Lock()
    n = 1_000_000
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            lock.acquire()
            lock.release()
        rounds.append((time.perf_counter() - start) * 1e9 / n)
    report("lock_uncontended", statistics.median(rounds), "ns")
    n = 200_000
    # Contended figures swing by half between runs (unfair locks run long streaks): the median of five.
    report("lock_contended", statistics.median([2 * n / two(ctx, hammer, (lock, n)) for _ in range(5)]), "ops/s")
    rates = []
    for _ in range(5):
        value = ctx.Value("q", 0)
        rates.append(2 * n / two(ctx, increment, (value, n)))
        assert value.value == 2 * n
    report("value_incr_locked", statistics.median(rates), "ops/s")
    size = 256 << 20
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        shm = shared_memory.SharedMemory(create=True, size=size)
        p = ctx.Process(target=write_all, args=(shm.name, size))
        p.start()
        p.join()
        total = 0
        for offset in range(0, size, 1 << 20):
            total += bytes(shm.buf[offset:offset + (1 << 20)])[0]
        shm.close()
        shm.unlink()
        rates.append(size / (time.perf_counter() - start) / 1e9)
    report("shm_bw", statistics.median(rates), "GB/s")


def pong_obj(conn, n, cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    for _ in range(n + 1):
        conn.send(conn.recv() + 1)


def pong_bytes(conn, n):
    for _ in range(n + 1):
        conn.send_bytes(conn.recv_bytes())


def pipe_rtt(ctx, placement, use_bytes, n=5000):
    everything = os.sched_getaffinity(0)
    if placement is not None:
        os.sched_setaffinity(0, {placement[0]})
    ours, theirs = ctx.Pipe()
    if use_bytes:
        p = ctx.Process(target=pong_bytes, args=(theirs, n))
    else:
        p = ctx.Process(target=pong_obj, args=(theirs, n, None if placement is None else placement[1]))
    p.start()
    payload = b"x" * 64

    def once():
        if use_bytes:
            ours.send_bytes(payload)
            ours.recv_bytes()
        else:
            ours.send(1)
            ours.recv()
    once()
    start = time.perf_counter()
    for _ in range(n):
        once()
    us = (time.perf_counter() - start) * 1e6 / n
    p.join()
    os.sched_setaffinity(0, everything)
    return us


def produce_small(q, n):
    for i in range(n):
        q.put(i)


def produce_big(q, n):
    item = b"\x5a" * (1 << 20)
    for _ in range(n):
        q.put(item)


def queue_pong(inbox, outbox, n):
    for _ in range(n + 1):
        outbox.put(inbox.get() + 1)


def group_ipc():
    ctx = mp.get_context("fork")
    two_cpus = len(os.sched_getaffinity(0)) >= 2
    for suffix, placement in (("", None), ("_samecpu", (0, 0)), ("_crosscpu", (0, 1))):
        if placement is not None and placement[0] != placement[1] and not two_cpus:
            continue
        report(f"pipe_rtt_obj{suffix}", statistics.median(pipe_rtt(ctx, placement, False) for _ in range(3)), "us")
    report("pipe_rtt_bytes", statistics.median(pipe_rtt(ctx, None, True) for _ in range(3)), "us")
    def queue_rate(n):
        q = ctx.Queue()
        p = ctx.Process(target=produce_small, args=(q, n))
        start = time.perf_counter()
        p.start()
        total = 0
        for _ in range(n):
            total += q.get()
        rate = n / (time.perf_counter() - start)
        # Joined after the items are taken: a CPython producer cannot exit before (its feeder thread holds them).
        p.join()
        assert total == n * (n - 1) // 2
        return rate
    report("queue_throughput_small", statistics.median(queue_rate(200_000) for _ in range(3)), "msgs/s")
    # A burst with nobody reading: the same, for CPython (mp joins its producer first).
    report("queue_burst", statistics.median(queue_rate(100_000) for _ in range(3)), "msgs/s")
    rates = []
    for _ in range(3):
        n = 500
        q = ctx.Queue()
        p = ctx.Process(target=produce_big, args=(q, n))
        start = time.perf_counter()
        p.start()
        for _ in range(n):
            assert len(q.get()) == 1 << 20
        rates.append(n * (1 << 20) / (time.perf_counter() - start) / 1e6)
        p.join()
    report("queue_bw_1mb", statistics.median(rates), "MB/s")
    rtts = []
    for _ in range(3):
        n = 5000
        inbox, outbox = ctx.Queue(), ctx.Queue()
        p = ctx.Process(target=queue_pong, args=(outbox, inbox, n))
        p.start()
        outbox.put(0)
        inbox.get()
        start = time.perf_counter()
        for i in range(n):
            outbox.put(i)
            inbox.get()
        rtts.append((time.perf_counter() - start) * 1e6 / n)
        p.join()
    report("queue_rtt", statistics.median(rtts), "us")


def square(x):
    return x * x


def is_prime(n):
    if n < 2:
        return False
    d = 2
    while d * d <= n:
        if n % d == 0:
            return False
        d += 1
    return True


SCALING_LIMIT = 300_000  # about a second in one CPython process
BLOCK = 5_000


def count_block(start):
    return sum(1 for n in range(start, start + BLOCK) if is_prime(n))


def group_pool():
    ctx = mp.get_context("fork")

    def startup():
        start = time.perf_counter()
        pool = ctx.Pool(2)
        pool.close()
        pool.join()
        return (time.perf_counter() - start) * 1e3
    report("pool_startup", statistics.median(startup() for _ in range(5)), "ms")
    with ctx.Pool(2) as pool:
        def rate(n, **kw):
            start = time.perf_counter()
            assert len(pool.map(square, range(n), **kw)) == n
            return n / (time.perf_counter() - start)
        report("pool_map_small", statistics.median(rate(200_000) for _ in range(3)), "items/s")
        report("pool_map_chunk1", statistics.median(rate(20_000, chunksize=1) for _ in range(3)), "items/s")
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(2, mp_context=ctx) as executor:
        def submit_rate(n=20_000):
            start = time.perf_counter()
            futures = [executor.submit(square, x) for x in range(n)]
            for f in futures:
                f.result()
            return n / (time.perf_counter() - start)
        report("executor_submit", statistics.median(submit_rate() for _ in range(3)), "tasks/s")

        def first_result(n=20_000):
            start = time.perf_counter()
            results = executor.map(square, range(n), chunksize=1)
            assert next(results) == 0
            ms = (time.perf_counter() - start) * 1e3
            assert sum(1 for _ in results) == n - 1
            return ms
        report("executor_map_first_result", statistics.median(first_result() for _ in range(3)), "ms")

    def primes():
        start = time.perf_counter()
        with ctx.Pool(processes=4) as pool:
            assert sum(pool.map(is_prime, range(1, 100_001))) == 9592
        return (time.perf_counter() - start) * 1e3
    report("primes_seed", statistics.median(primes() for _ in range(3)), "ms")

    def scaling(workers):
        with ctx.Pool(workers) as pool:
            start = time.perf_counter()
            total = sum(pool.map(count_block, range(0, SCALING_LIMIT, BLOCK), chunksize=1))
            elapsed = time.perf_counter() - start
        assert total == 25_997
        return elapsed
    one = statistics.median(scaling(1) for _ in range(3))
    two = statistics.median(scaling(2) for _ in range(3))
    report("primes_scaling", one / two, "x")


LOG_RECORDS = 200_000


def log_flood(queue, n):
    import logging
    import logging.handlers
    logger = logging.getLogger("bench")
    logger.handlers[:] = [logging.handlers.QueueHandler(queue)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for i in range(n):
        logger.info("record %d", i)


def group_log():
    """The same workload with CPython's own pattern: QueueHandler on a multiprocessing.Queue, and a
    QueueListener in the parent whose handler counts."""
    import logging
    import logging.handlers
    import threading

    class Count(logging.Handler):
        def __init__(self):
            super().__init__()
            self.n = 0
            self.done = threading.Event()

        def emit(self, record):
            self.n += 1
            if self.n == LOG_RECORDS:
                self.done.set()

    rates = []
    for _ in range(3):
        queue = mp.get_context("forkserver").Queue()
        handler = Count()
        listener = logging.handlers.QueueListener(queue, handler)
        listener.start()
        start = time.perf_counter()
        p = mp.get_context("forkserver").Process(target=log_flood, args=(queue, LOG_RECORDS))
        p.start()
        handler.done.wait(120)
        rates.append(handler.n / (time.perf_counter() - start))
        p.join()
        listener.stop()
    report("log_forward_throughput", statistics.median(rates), "records/s")


if __name__ == "__main__":
    groups = sys.argv[1:] or ["process", "sync", "ipc", "pool", "log"]
    if "process" in groups:
        group_process()
    if "sync" in groups:
        group_sync()
    if "ipc" in groups:
        group_ipc()
    if "pool" in groups:
        group_pool()
    if "log" in groups:
        group_log()
