#!/usr/bin/python3
"""pythreads DIR: a self-checking ctcr workload in Python 3 with threads.

Eight threads each count their own counter under the GIL, sleeping 1 ms
every 1000 steps. DIR/ready holds the PID and, per thread, its native TID
and its counter at ready. After restore (DIR/check) the main thread checks
the PID, that each thread's native TID is the same (threading.get_native_id
asked again by the thread itself), that each counter is at least its ready
value and still increases, and that a lock handed between the threads still
works; it writes DIR/result PASS or FAIL and exits 0 or 1.
"""
import os
import sys
import threading
import time

THREADS = 8


class Counter(threading.Thread):
    def __init__(self, index):
        super().__init__(name=f"count-{index}", daemon=True)
        self.index = index
        self.count = 0
        self.tid = None
        self.tid_after = None
        self.stop = False
        self.ask_tid = threading.Event()
        self.told_tid = threading.Event()

    def run(self):
        self.tid = threading.get_native_id()
        while not self.stop:
            for _ in range(1000):
                self.count += 1
            if self.ask_tid.is_set() and not self.told_tid.is_set():
                self.tid_after = threading.get_native_id()
                self.told_tid.set()
            time.sleep(0.001)


def write_file(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def main():
    d = sys.argv[1]
    threads = [Counter(i) for i in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    lines = [f"pid {os.getpid()}"]
    lines += [f"thread{t.index} {t.tid} {t.count}" for t in threads]
    write_file(os.path.join(d, "ready"), "\n".join(lines) + "\n")

    while not os.path.exists(os.path.join(d, "check")):
        time.sleep(0.01)

    failures = []
    with open(os.path.join(d, "ready")) as f:
        saved = dict(line.split(" ", 1) for line in f.read().splitlines())
    if os.getpid() != int(saved["pid"]):
        failures.append(f"getpid() {os.getpid()} != {saved['pid']}")
    now = [t.count for t in threads]
    for t in threads:
        t.ask_tid.set()
    for t in threads:
        if not t.told_tid.wait(10):
            failures.append(f"thread {t.index} did not answer within 10 s")
    lock = threading.Lock()
    total = [0]

    def add():
        for _ in range(10000):
            with lock:
                total[0] += 1

    adders = [threading.Thread(target=add) for _ in range(4)]
    for a in adders:
        a.start()
    for a in adders:
        a.join(10)
    if total[0] != 40000:
        failures.append(f"4 new threads adding 10000 each under a lock got {total[0]}")
    time.sleep(0.3)
    for t, c in zip(threads, now):
        tid, count = (int(v) for v in saved[f"thread{t.index}"].split())
        if t.tid_after != tid:
            failures.append(f"thread {t.index}: native TID {t.tid_after} != {tid}")
        if c < count:
            failures.append(f"thread {t.index}: counter {c} went back from {count}")
        if t.count <= c:
            failures.append(f"thread {t.index}: counter stuck at {t.count}")
        if not t.is_alive():
            failures.append(f"thread {t.index} is no longer alive")
    for t in threads:
        t.stop = True
    result = "FAIL: " + "; ".join(failures) + "\n" if failures else "PASS\n"
    write_file(os.path.join(d, "result"), result)
    sys.stderr.write(result)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
