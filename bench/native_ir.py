# Counts, natively, the instructions sidekey's worker thread executes per
# request, by single-stepping it in gdb (no hardware counters needed).
# Run by bench/native_ir.sh, which starts the upstream and the client and
# sets these (environment):
#
#   NATIVE_IR_LABELS   the routes, in the order the client sends them; a route may come
#                      back ("basic sigv4 sigv4 basic": a drift over the run cancels out)
#   NATIVE_IR_WARMUP   requests per route run freely before counting (20)
#   NATIVE_IR_CYCLES   requests per connection counted (after one stepped, not counted)
#   NATIVE_IR_ANCHOR   a function called once per request (RouteTable::find)
#   NATIVE_IR_INCLUSIVE  functions (`;`-separated) whose inclusive cost is counted
#   NATIVE_IR_TOP      functions shown in the per-function difference (40)
#   NATIVE_IR_LINES    a regex: per source line cost of the functions it matches (second route)
#   NATIVE_IR_FREEZE_CLOCKS  1 (default): see "Time" below; 0: the real clocks
#
# Time. Stepped, one request takes seconds of wall time. Anything sidekey
# computes once per second (the SigV4 signer's `X-Amz-Date` and the state
# of its string to sign's first block) would then be computed for every
# request, as on a proxy serving under one request a second, and the
# timer wheel would have seconds to catch up on after each request, more
# after a request that takes longer to step: neither happens on a loaded
# proxy (nor under callgrind, where 1,000 requests take a few seconds).
# So by default every clock stands still while one connection's requests
# are stepped (a clock read returns the value that clock first read on
# that connection; time runs between connections), as if the CPU were
# infinitely fast: the requests counted share one second. The first
# request stepped on each connection is not counted.
#   NATIVE_IR_OUT      file for the per-function table (TSV)
#   NATIVE_IR_REPORT   file for the results (gdb's stdout gets every stepped frame)
#   NATIVE_IR_PIDFILE  file for sidekey's PID (it is left running, detached)
#
# One cycle = from one arrival at the anchor to the next on the worker
# thread (workers = 1): everything that thread does for one request on a
# keep-alive connection (the rest of the handler, the upstream write, the
# wait, the answer, reading and parsing the next request). Each `stepi`
# executes one instruction; a REP-prefixed string instruction traps after
# every iteration (the PC does not move), and those iterations are counted
# apart, so "instructions" counts a `rep movsb` once, as the CPU's counter
# does. A syscall is one instruction (the kernel is not counted, as under
# callgrind).
import os
import re
import statistics
import sys

import gdb

LABELS = os.environ.get("NATIVE_IR_LABELS", "basic sigv4 sigv4 basic").split()
WARMUP = int(os.environ.get("NATIVE_IR_WARMUP", "20"))
CYCLES = int(os.environ.get("NATIVE_IR_CYCLES", "4"))
ANCHOR = os.environ.get("NATIVE_IR_ANCHOR", "sidekey::route::RouteTable::find")
INCLUSIVE = [f for f in os.environ.get("NATIVE_IR_INCLUSIVE", "").split(";") if f]
TOP = int(os.environ.get("NATIVE_IR_TOP", "40"))
LINES = os.environ.get("NATIVE_IR_LINES", "")
FREEZE = os.environ.get("NATIVE_IR_FREEZE_CLOCKS", "1") == "1"
OUT = os.environ.get("NATIVE_IR_OUT", "")
REPORT = open(os.environ.get("NATIVE_IR_REPORT", "/dev/stderr"), "w")


def report(*args):
    print(*args, file=REPORT, flush=True)
# The functions that compress SHA-256 blocks: ring's (one per code path:
# `hw` is SHA-NI) and sha2's (`x86::digest_blocks` is its SHA-NI one).
SHA_BLOCKS = re.compile(
    r"sha256_block_data_order_(hw|avx|ssse3|nohw)|sha2::sha256::(x86::digest_blocks|soft::compress)"
)


def say(*args):
    print("native_ir:", *args, file=sys.stderr, flush=True)


for setting in (
    "pagination off",
    "confirm off",
    "print frame-arguments none",
    "print frame-info short-location",
    "style enabled off",
    "print thread-events off",
    "print inferior-events off",
):
    gdb.execute("set " + setting)


def address_of(name):
    sym = gdb.lookup_global_symbol(name) or gdb.lookup_static_symbol(name)
    if sym is None:
        return None
    return int(sym.value().address)


def minimal_address(name):
    """Address of an ELF symbol without debug info (ring's assembly)."""
    try:
        text = gdb.execute(f"info address {name}", to_string=True)
    except gdb.error:
        return None
    m = re.search(r"(?:at address|is at) (0x[0-9a-f]+)", text)
    return int(m.group(1), 16) if m else None


# Stopped at the first instruction: the executable is mapped, so its
# symbols have their run-time addresses. The anchor is the function's
# entry (not past its prologue, which may be inside a loop).
gdb.execute("starti", to_string=True)
anchor_at = address_of(ANCHOR)
if anchor_at is None:
    raise gdb.GdbError(f"no function {ANCHOR}")
anchor = gdb.Breakpoint(f"*{anchor_at:#x}", internal=True)
# The first arrival counted is the one of request WARMUP + 1.
anchor.ignore_count = WARMUP
gdb.execute("continue", to_string=True)
thread = gdb.selected_thread()
if os.environ.get("NATIVE_IR_PIDFILE"):
    with open(os.environ["NATIVE_IR_PIDFILE"], "w") as f:
        f.write(str(gdb.selected_inferior().pid))
anchor_pc = int(gdb.selected_frame().pc())

tracked = {}  # entry address -> name
for name in INCLUSIVE:
    at = address_of(name)
    if at is None:
        say(f"{name}: no such function (inlined?): not counted on its own")
    else:
        tracked[at] = name
ring = re.search(r"ring_core_\d+_\d+_\d+__", gdb.execute(
    "info functions -n sha256_block_data_order_hw", to_string=True))
for suffix in ("hw", "avx", "ssse3", "nohw"):
    name = f"{ring.group(0) if ring else ''}sha256_block_data_order_{suffix}"
    at = minimal_address(name)
    if at is not None:
        tracked[at] = name
for name in ("sha2::sha256::x86::digest_blocks", "sha2::sha256::soft::compress"):
    at = address_of(name)
    if at is not None:
        tracked[at] = name
say("counted on their own: " + ", ".join(f"{n} ({a:#x})" for a, n in tracked.items()))


def read_reg(name):
    return int(gdb.selected_frame().read_register(name)) & 0xFFFFFFFFFFFFFFFF


def read_u64(addr):
    mem = gdb.selected_inferior().read_memory(addr, 8)
    return int.from_bytes(bytes(mem), "little")


def vdso_range():
    pid = gdb.selected_inferior().pid
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            if line.rstrip().endswith("[vdso]"):
                lo, hi = line.split()[0].split("-")
                return int(lo, 16), int(hi, 16)
    return 0, 0


VDSO = vdso_range()
# One pass through a vDSO clock read: distinct instructions stepped in it
# (measured on the first call; see step_over_vdso).
vdso_pass = []


def step_over_vdso():
    """Runs a vDSO call (a clock read) to its return without stepping it.

    Stepped, a clock read never returns: its seqlock loop retries whenever
    a timer tick updated the time data meanwhile, and one stepped pass
    takes longer than a tick. So it runs at full speed to a breakpoint at
    its return address (this thread only); the first call is stepped for
    up to 400 instructions first, and the distinct instructions it ran
    (the entry, one pass of the loop) are kept as the cost of a pass."""
    rsp = read_reg("rsp")
    ret = read_u64(rsp)
    entry = int(gdb.selected_frame().pc())
    clock, timespec = read_reg("rdi"), read_reg("rsi")
    returned = False
    if not vdso_pass:
        seen = set()
        for _ in range(400):
            pc = int(gdb.selected_frame().pc())
            if pc == ret and read_reg("rsp") == rsp + 8:
                returned = True
                break
            seen.add(pc)
            gdb.execute("stepi", to_string=True)
        vdso_pass.append(len(seen))
    if not returned:
        bp = gdb.Breakpoint(f"*{ret:#x}", internal=True, temporary=True)
        bp.thread = thread.num
        while True:
            gdb.execute("continue", to_string=True)
            if int(gdb.selected_frame().pc()) == ret and read_reg("rsp") == rsp + 8:
                break
            # A recursive arrival at the same address: go on.
            bp = gdb.Breakpoint(f"*{ret:#x}", internal=True, temporary=True)
            bp.thread = thread.num
        if bp.is_valid():
            bp.delete()
    if FREEZE and read_reg("rax") == 0 and is_clock_gettime(entry):
        # Each clock reads, while one connection's requests are stepped,
        # the value it first read then.
        inferior = gdb.selected_inferior()
        if clock not in frozen:
            frozen[clock] = bytes(inferior.read_memory(timespec, 16))
        else:
            inferior.write_memory(timespec, frozen[clock])


frozen = {}
clock_entries = {}


def is_clock_gettime(pc):
    if pc not in clock_entries:
        text = gdb.execute(f"info symbol {pc:#x}", to_string=True)
        clock_entries[pc] = text.split()[0] in ("__vdso_clock_gettime", "clock_gettime")
    return clock_entries[pc]


def one_cycle():
    """Steps from the anchor to the next arrival there."""
    hist = {}
    instructions = 0
    rep_iterations = 0
    calls = {}  # name -> [calls, inclusive instructions, blocks]
    open_calls = []  # [name, return address, rsp after return, start count]
    prev = anchor_pc
    frame = gdb.selected_frame
    while True:
        gdb.execute("stepi", to_string=True)
        pc = int(frame().pc())
        if pc == prev:
            rep_iterations += 1
            continue
        instructions += 1
        hist[prev] = hist.get(prev, 0) + 1
        if pc == anchor_pc:
            break
        if VDSO[0] <= pc < VDSO[1]:
            calls.setdefault("[vdso]", [0, 0, 0])[0] += 1
            step_over_vdso()
            pc = int(frame().pc())
        if open_calls and pc == open_calls[-1][1] and read_reg("rsp") == open_calls[-1][2]:
            name, _, _, start = open_calls.pop()
            calls[name][1] += instructions - start
        name = tracked.get(pc)
        if name is not None:
            rsp = read_reg("rsp")
            entry = calls.setdefault(name, [0, 0, 0])
            entry[0] += 1
            if SHA_BLOCKS.search(name):
                entry[2] += read_reg("rdx")  # (state, data, number of blocks)
            open_calls.append([name, read_u64(rsp), rsp + 8, instructions])
        prev = pc
        if gdb.selected_thread() != thread:
            raise gdb.GdbError("stepping left the worker thread")
    return instructions, rep_iterations, hist, calls


results = {}
for i, label in enumerate(LABELS):
    if i > 0:
        anchor.enabled = True
        # Skip what is left of the previous route's connection (the
        # request the last cycle ended on) and this route's warm-up.
        anchor.ignore_count = WARMUP
        gdb.execute("continue", to_string=True)
        if gdb.selected_thread() != thread:
            raise gdb.GdbError("the anchor was reached on another thread: set workers = 1")
    anchor.enabled = False
    frozen.clear()
    say(f"{label}: stepping {CYCLES} requests")
    # The first request stepped on a connection is not counted: it fills
    # what is kept per second for the clock's new value (see "Time").
    cycles = [one_cycle() for _ in range(CYCLES + 1)][1:]
    results.setdefault(label, []).extend(cycles)
    counts = [c[0] for c in cycles]
    say(f"{label}: instructions per request {counts}")
    # Leave the anchor at the last cycle's end (request WARMUP + CYCLES + 2).

# Symbols of every PC stepped, resolved once.
names = {}


def symbol_of(pc):
    if pc not in names:
        text = gdb.execute(f"info symbol {pc:#x}", to_string=True).strip()
        m = re.match(r"(.+?)(?: \+ \d+)? in section \S+(?: of (\S+))?", text)
        if m:
            lib = os.path.basename(m.group(2)) if m.group(2) else ""
            names[pc] = m.group(1) + (f" [{lib}]" if lib else "")
        else:
            names[pc] = f"?? {pc:#x}"
    return names[pc]


def per_function(cycles):
    total = {}
    for _, _, hist, calls in cycles:
        for pc, n in hist.items():
            f = symbol_of(pc)
            total[f] = total.get(f, 0) + n
        total["[vdso] clock reads"] = total.get("[vdso] clock reads", 0) + \
            calls.get("[vdso]", [0])[0] * PASS
    return {f: n / len(cycles) for f, n in total.items()}


# Proof of the SHA-256 code path: the instructions of the block function
# that ran, as the CPU executed them.
all_pcs = {pc for cycles in results.values() for c in cycles for pc in c[2]}
sha_seen = sorted({symbol_of(pc) for pc in all_pcs if SHA_BLOCKS.search(symbol_of(pc))})
for name in sha_seen:
    pcs = sorted(pc for pc in all_pcs if symbol_of(pc) == name)
    mnemonics = {}
    for pc in pcs:
        insn = gdb.execute(f"x/i {pc:#x}", to_string=True).split(":", 1)[-1].split()
        if insn:
            mnemonics[insn[0]] = mnemonics.get(insn[0], 0) + 1
    sha = {k: v for k, v in mnemonics.items() if k.startswith("sha")}
    say(f"{name}: {len(pcs)} distinct instructions executed; SHA extension ones: {sha or 'none'}")

PASS = vdso_pass[0] if vdso_pass else 0
if vdso_pass:
    say(f"vDSO clock read: {PASS} distinct instructions in one stepped pass (counted per read)")


def total(cycle):
    """Instructions of a cycle: stepped, plus its vDSO clock reads."""
    return cycle[0] + cycle[3].get("[vdso]", [0])[0] * PASS


report()
report("| route | instructions per request (median of cycles) | all cycles | vDSO clock reads | "
      "REP iterations | SHA-256 blocks | instructions per block | " + " | ".join(INCLUSIVE) + " |")
report("| --- | ---: | --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(INCLUSIVE))
medians = {}
for label, cycles in results.items():
    counts = [total(c) for c in cycles]
    medians[label] = statistics.median(counts)
    blocks = sum(v[2] for c in cycles for n, v in c[3].items() if SHA_BLOCKS.search(n)) / len(cycles)
    sha_instr = sum(v[1] for c in cycles for n, v in c[3].items() if SHA_BLOCKS.search(n)) / len(cycles)
    per_block = f"{sha_instr / blocks:.1f}" if blocks else "-"
    incl = []
    for f in INCLUSIVE:
        spent = [c[3].get(f, [0, 0, 0]) for c in cycles]
        n_calls = sum(s[0] for s in spent) / len(cycles)
        incl.append(f"{sum(s[1] for s in spent) / len(cycles):.0f} ({n_calls:g} calls)")
    reps = statistics.median(c[1] for c in cycles)
    clocks = statistics.median(c[3].get("[vdso]", [0])[0] for c in cycles)
    report(f"| {label} | {medians[label]:.0f} | {' '.join(map(str, counts))} | {clocks:g} | {reps:.0f} | "
          f"{blocks:g} | {per_block} | " + " | ".join(incl) + " |")

ROUTES = list(dict.fromkeys(LABELS))
if len(ROUTES) == 2:
    a, b = ROUTES
    report(f"\n{b} − {a}: {medians[b] - medians[a]:+.0f} instructions per request (medians)")
    fa, fb = per_function(results[a]), per_function(results[b])
    diff = {f: fb.get(f, 0) - fa.get(f, 0) for f in set(fa) | set(fb)}
    report(f"\nper function (self), {b} − {a}, per request:")
    for f, d in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:TOP]:
        report(f"{d:+10.1f}  {f}")
    if LINES:
        # Source lines of the functions LINES matches, for the second route.
        pattern = re.compile(LINES)
        by_line = {}
        for _, _, hist, _ in results[b]:
            for pc, n in hist.items():
                if pattern.search(symbol_of(pc)):
                    sal = gdb.find_pc_line(pc)
                    tail = "/".join(sal.symtab.filename.split("/")[-3:]) if sal.symtab else ""
                    where = f"{tail}:{sal.line}" if tail else f"{pc:#x}"
                    by_line[where] = by_line.get(where, 0) + n / len(results[b])
        report(f"\nsource lines of functions matching {LINES!r}, {b}, per request:")
        for where, n in sorted(by_line.items(), key=lambda kv: -kv[1])[:TOP]:
            report(f"{n:10.1f}  {where}")
    if OUT:
        with open(OUT, "w") as out:
            out.write(f"function\t{a}\t{b}\t{b} - {a}\n")
            for f, d in sorted(diff.items(), key=lambda kv: -kv[1]):
                out.write(f"{f}\t{fa.get(f, 0):.1f}\t{fb.get(f, 0):.1f}\t{d:.1f}\n")

gdb.execute("detach", to_string=True)
