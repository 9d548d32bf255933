# The barrier protocol of flash_forward.cu's ping-pong loop (FMHA_PING_PONG), simulated on the CPU: two warp
# groups as two agents under random interleavings and copy delays, for 0-12 key tiles. Checks that no wait
# blocks forever, every read sees the tile it expects, and the named barriers end balanced. Mirror any change
# to the kernel's loop here.  python3 scripts/ping_pong_protocol.py
import random
class MBar:
    def __init__(s): s.count = 0; s.phase = 0
    def arrive(s, n):
        s.count += n; assert s.count <= 256
        if s.count == 256: s.count = 0; s.phase += 1
    def done(s, parity): return (s.phase % 2) != parity
def program(g, tiles):
    ops = []
    def fill(X, t): ops.append(('fill', X, t))
    if tiles > 0:
        fill('K', 0); fill('V', 0)
        if tiles > 1: fill('K', 1); fill('V', 1)
        ops.append(('waitfull', 'Q', 0, 0))
        if g == 1: ops.append(('narrive', 1))
        for t in range(-1, tiles):
            more = t + 1 < tiles
            ops.append(('nsync', 1 + g))
            if t >= 0:
                ops.append(('waitfull', 'V', t % 2, (t // 2) & 1)); ops.append(('read', 'V', t)); ops.append(('arrive_empty', 'V', t % 2))
            if more:
                ops.append(('waitfull', 'K', (t + 1) % 2, ((t + 1) // 2) & 1)); ops.append(('read', 'K', t + 1)); ops.append(('arrive_empty', 'K', (t + 1) % 2))
                ops.append(('narrive', 2 - g))
            elif g == 0:
                ops.append(('narrive', 2))
            if t >= 0 and t + 2 < tiles: ops.append(('waitempty', 'V', t % 2, (t // 2) & 1)); fill('V', t + 2)
            if t + 3 < tiles: ops.append(('waitempty', 'K', (t + 1) % 2, ((t + 1) // 2) & 1)); fill('K', t + 3)
    return ops
def run(tiles, seed):
    rnd = random.Random(seed)
    full = {('K', 0): MBar(), ('K', 1): MBar(), ('V', 0): MBar(), ('V', 1): MBar(), ('Q', 0): MBar()}
    empty = {('K', 0): MBar(), ('K', 1): MBar(), ('V', 0): MBar(), ('V', 1): MBar()}
    content = {}
    named = {1: [0, 0], 2: [0, 0]}   # arrivals (threads) waiting in current round, number of syncers waiting
    pending = []   # copies in flight: (stage key, tile, group)
    progs = [program(0, tiles), program(1, tiles)]
    pc = [0, 0]
    waiting_named = {0: None, 1: None}
    # Q fill by both groups at start
    if tiles > 0:
        pending += [(('Q', 0), 0, 0), (('Q', 0), 0, 1)]
    steps = 0
    while pc[0] < len(progs[0]) or pc[1] < len(progs[1]) or pending:
        steps += 1
        if steps > 100000: return 'deadlock'
        choices = [g for g in (0, 1) if pc[g] < len(progs[g])] + (['copy'] if pending else [])
        progress = False
        rnd.shuffle(choices)
        for who in choices:
            if who == 'copy':
                i = rnd.randrange(len(pending)); key, t, g = pending.pop(i)
                if key[0] != 'Q':
                    content[(key, g)] = t
                full[key].arrive(128); progress = True; break
            g = who; op = progs[g][pc[g]]
            kind = op[0]
            if kind == 'fill':
                X, t = op[1], op[2]; pending.append(((X, t % 2), t, g)); pc[g] += 1; progress = True; break
            if kind == 'waitfull':
                if full[(op[1], op[2])].done(op[3]): pc[g] += 1; progress = True; break
                continue
            if kind == 'waitempty':
                if empty[(op[1], op[2])].done(op[3]): pc[g] += 1; progress = True; break
                continue
            if kind == 'read':
                X, t = op[1], op[2]
                for h in (0, 1):
                    assert content.get(((X, t % 2), h)) == t, ('stale read', X, t, g, content)
                pc[g] += 1; progress = True; break
            if kind == 'arrive_empty':
                empty[(op[1], op[2])].arrive(128); pc[g] += 1; progress = True; break
            if kind == 'narrive':
                named[op[1]][0] += 128; assert named[op[1]][0] <= 128, ('double arrive', op, g); pc[g] += 1; progress = True
                b = named[op[1]]
                if b[0] + b[1] >= 256: pass
                break
            if kind == 'nsync':
                b = named[op[1]]
                if waiting_named[g] is None:
                    waiting_named[g] = op[1]; b[1] += 128
                if b[0] + b[1] >= 256 and waiting_named[g] == op[1]:
                    b[0] -= (256 - b[1]); b[1] = 0; waiting_named[g] = None; pc[g] += 1; progress = True; break
                continue
        if not progress and not pending:
            return 'deadlock at %s' % (pc,)
    # named barriers balanced at the end
    if any(v != [0, 0] for v in named.values()): return 'unbalanced %s' % named
    return 'ok'
bad = 0
for tiles in range(0, 13):
    for seed in range(300):
        r = run(tiles, seed)
        if r != 'ok':
            print(tiles, seed, r); bad += 1
            break
print('failures:', bad)
