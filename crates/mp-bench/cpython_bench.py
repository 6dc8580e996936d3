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


if __name__ == "__main__":
    groups = sys.argv[1:] or ["process"]
    if "process" in groups:
        group_process()
