"""Allocation-heavy Python for `compare`: JSON round trips, dict and str
churn, and small objects made and dropped by several threads at once.

Usage: python3 churn.py SCALE. Prints `checksum N`, the same under every
correct allocator. `compare` runs it with PYTHONMALLOC=malloc, so that the
objects pymalloc would pool come from the allocator under test.
"""
import hashlib
import json
import sys
import threading

scale = float(sys.argv[1])
n = max(100, int(450000 * scale))
digest = hashlib.sha256()


def json_round_trips(count):
    total = 0
    for i in range(count):
        doc = {
            "id": i,
            "name": "item-%d" % i,
            "tags": ["t%d" % (i % 7), "u%d" % (i % 13), "v" * (i % 40)],
            "nested": {"values": [i, i * 2.5, str(i)], "flag": i % 2 == 0},
        }
        text = json.dumps(doc, sort_keys=True)
        back = json.loads(text)
        total += len(text) + len(back["tags"][2])
    return total


def dict_and_str_churn(count):
    table = {}
    total = 0
    for i in range(count):
        key = "k%d-%s" % (i % 5000, "x" * (i % 23))
        table[key] = table.get(key, "") + chr(97 + i % 26)
        if len(table[key]) > 12:
            total += len(table.pop(key))
        if i % 1000 == 0:
            words = " ".join(str(j * i) for j in range(100)).split()
            total += len(sorted(words, key=len))
    return total + sum(len(v) for v in table.values())


class Node:
    __slots__ = ("value", "children")

    def __init__(self, value):
        self.value = value
        self.children = []


def small_objects(count, results, slot):
    total = 0
    for i in range(count):
        root = Node(i)
        for j in range(20):
            child = Node((i, j))
            child.children.append([j] * (j % 5))
            root.children.append(child)
        total += sum(len(c.children[0]) for c in root.children)
    results[slot] = total


digest.update(str(json_round_trips(n)).encode())
digest.update(str(dict_and_str_churn(4 * n)).encode())
results = [0] * 4
workers = [threading.Thread(target=small_objects, args=(n // 4, results, k)) for k in range(4)]
for w in workers:
    w.start()
for w in workers:
    w.join()
digest.update(str(results).encode())
print("checksum", int(digest.hexdigest()[:15], 16))
