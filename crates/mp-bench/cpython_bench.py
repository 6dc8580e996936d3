"""CPython's multiprocessing on the workloads of `cargo xtask bench`; one JSON line per workload."""
import json
import multiprocessing as mp
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
    report("lock_contended", statistics.median([2 * n / two(ctx, hammer, (lock, n)) for _ in range(3)]), "ops/s")
    rates = []
    for _ in range(3):
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


if __name__ == "__main__":
    groups = sys.argv[1:] or ["process", "sync"]
    if "process" in groups:
        group_process()
    if "sync" in groups:
        group_sync()
