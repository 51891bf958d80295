"""Linearizability of a recorded key-value history, one key at a time.

The search is Wing and Gong's, with Lowe's memoisation (the approach
porcupine takes): walk the history's call and return events in time order;
at a call, try to linearize that operation now (the model must accept its
output in the current state); at a return whose operation has not been
linearized, undo the most recent choice and try the next candidate.  A
(linearized set, state) pair already explored is not explored again.

Every operation touches one key, so the history is split per key and each
key checked alone (linearizability is local: Herlihy and Wing, 1990).

Operations (dicts, as recorded by the workload):
    {"type": "get"|"put"|"del"|"cas", "key", "call": t, "ret": t or None,
     "status": "ok"|"unknown", ...}
    get:  out {"value": str or None}
    put:  in  "value"
    del:  out {"deleted": int} when ok
    cas:  in  "expect" (None = key absent), "value"; out {"succeeded": bool}
An operation whose outcome is unknown (timed out, connection lost, error
after it may have been proposed) has ret None: it may take effect at any
point after its call, or never; its output constrains nothing.  An "ok"
operation without "out" took effect before its ret with an unknown output
(a lease's revocation, observed through TimeToLive).  Failed reads
are not in the history (they changed nothing and returned nothing).
"""

import math


class _Entry:
    __slots__ = ("op", "idx", "is_call", "time", "match", "prev", "next")

    def __init__(self, op, idx, is_call, time):
        self.op = op
        self.idx = idx
        self.is_call = is_call
        self.time = time
        self.match = None
        self.prev = None
        self.next = None


def step(state, op):
    """(accepted, new_state) for applying op to a register holding `state`
    (None = absent)."""
    t = op["type"]
    out = op.get("out")
    known = op.get("status") == "ok" and out is not None
    out = out or {}
    if t == "get":
        return out.get("value") == state, state
    if t == "put":
        return True, op["value"]
    if t == "del":
        if known and out.get("deleted") != (0 if state is None else 1):
            return False, None
        return True, None
    if t == "cas":
        cond = state == op.get("expect")
        if known and bool(out.get("succeeded")) != cond:
            return False, state
        return True, (op["value"] if cond else state)
    raise ValueError("unknown operation type %r" % (t,))


def _blind(op):
    """An operation whose effect does not depend on the state and whose
    output says nothing about it: a put, or a delete whose answer is unknown."""
    if op["type"] == "put":
        return True
    return op["type"] == "del" and (op.get("status") != "ok" or op.get("out") is None)


class Result:
    def __init__(self, ok, key, ops, detail="", steps=0, exhausted=False):
        self.ok = ok
        self.key = key
        self.ops = ops
        self.detail = detail
        self.steps = steps
        self.exhausted = exhausted


def check_key(key, ops, initial=None, max_steps=5_000_000):
    """Checks one key's operations; returns a Result."""
    events = []
    for i, op in enumerate(ops):
        call = _Entry(op, i, True, op["call"])
        ret_t = op["ret"] if op.get("ret") is not None else math.inf
        ret = _Entry(op, i, False, ret_t)
        call.match = ret
        events.append(call)
        events.append(ret)
    # Calls before returns at equal times: such operations count as
    # concurrent, which only ever allows more orders.
    events.sort(key=lambda e: (e.time, 0 if e.is_call else 1))
    head = _Entry(None, -1, False, -math.inf)
    prev = head
    for e in events:
        prev.next = e
        e.prev = prev
        prev = e

    def lift(e):
        e.prev.next = e.next
        if e.next:
            e.next.prev = e.prev
        m = e.match
        m.prev.next = m.next
        if m.next:
            m.next.prev = m.prev

    def unlift(e):
        m = e.match
        m.prev.next = m
        if m.next:
            m.next.prev = m
        e.prev.next = e
        if e.next:
            e.next.prev = e

    state = initial
    linearized = 0
    cache = set()
    stack = []
    entry = head.next
    steps = 0
    best = 0
    best_stuck = None
    # Operations that never returned may take effect at the very end, where
    # nothing observes them: the search is done once every operation that
    # did return is placed.
    remaining = sum(1 for op in ops if op.get("ret") is not None)
    while remaining > 0:
        steps += 1
        if steps > max_steps:
            return Result(False, key, ops, "search budget of %d steps exhausted" % max_steps,
                          steps, exhausted=True)
        if entry.is_call:
            top = stack[-1][0].op if stack else None
            # A write that never returned, placed just before another blind
            # write, changes nothing anyone sees: the same order with it moved
            # to the end is explored instead.  (Prunes the 2^n orders of n
            # concurrent timed-out writes.)
            if top is not None and top.get("ret") is None and _blind(top) and _blind(entry.op):
                entry = entry.next
                continue
            ok, new_state = step(state, entry.op)
            # Likewise a write that never returned and would change nothing
            # here (a failing compare, a delete of nothing): placing it at
            # the end is equivalent.
            if ok and entry.op.get("ret") is None and new_state == state:
                ok = False
            if ok:
                new_lin = linearized | (1 << entry.idx)
                sig = (new_lin, new_state, entry.op.get("ret") is None and _blind(entry.op))
                if sig not in cache:
                    cache.add(sig)
                    stack.append((entry, state))
                    state = new_state
                    linearized = new_lin
                    if entry.op.get("ret") is not None:
                        remaining -= 1
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if len(stack) >= best:
                best = len(stack)
                best_stuck = (entry.op, state)
            if not stack:
                return Result(False, key, ops, _explain(key, best, best_stuck, ops), steps)
            entry, state = stack.pop()
            linearized &= ~(1 << entry.idx)
            if entry.op.get("ret") is not None:
                remaining += 1
            unlift(entry)
            entry = entry.next
    return Result(True, key, ops, "", steps)


def _fmt(op):
    if op is None:
        return "?"
    ret = "%.3f" % op["ret"] if op.get("ret") is not None else "never"
    return "#%s %s %s in=%r out=%r status=%s [%.3f, %s] client=%s member=%s" % (
        op.get("id"), op["type"], op["key"],
        {k: op.get(k) for k in ("value", "expect") if k in op}, op.get("out"),
        op.get("status"), op["call"], ret, op.get("client"), op.get("member"))


def _explain(key, best, stuck, ops):
    op, state = stuck if stuck else (None, None)
    lines = ["key %r is not linearizable: at most %d of %d operations could be ordered;"
             % (key, best, len(ops)),
             "no order lets this operation return as it did, with the register at %r there:"
             % (state,),
             "  " + _fmt(op)]
    if op is not None:
        near = [o for o in ops if o is not op and o["call"] <= op["ret"] + 1e-9 and
                (o.get("ret") is None or o["ret"] >= op["call"] - 2.0)]
        near.sort(key=lambda o: o["call"])
        lines.append("operations overlapping it or ending up to 2 s before it:")
        lines += ["  " + _fmt(o) for o in near[-40:]]
    return "\n".join(lines)


def check(history, keys=None, max_steps=5_000_000):
    """history: iterable of operation dicts.  Returns (violations, stats)."""
    per_key = {}
    for op in history:
        if op["type"] not in ("get", "put", "del", "cas"):
            continue
        if keys is not None and op["key"] not in keys:
            continue
        if op["type"] == "get" and op.get("status") != "ok":
            continue
        if op.get("status") not in ("ok", "unknown"):
            continue
        per_key.setdefault(op["key"], []).append(op)
    violations = []
    stats = {"keys": len(per_key), "operations": sum(len(v) for v in per_key.values()),
             "steps": 0, "inconclusive": 0}
    for key in sorted(per_key):
        r = check_key(key, per_key[key], max_steps=max_steps)
        stats["steps"] += r.steps
        if r.exhausted:
            stats["inconclusive"] += 1
        if not r.ok:
            violations.append(r.detail)
    return violations, stats
