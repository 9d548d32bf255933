"""The barrier protocol of flash_forward.cu's two-stage loop (FMHA_STAGES 2), simulated on the CPU.

Each warp is an agent running the kernel's sequence of barrier operations; copies land later, in any
order. Random interleavings for 0-12 key tiles check that no wait blocks forever and that every read
of a buffer, from its first to its last instruction, sees the tile it expects (no refill lands in
between). Mirror any change to the kernel's loop here.

  python3 scripts/two_stage_protocol.py [--warps 8] [--seeds 300]
"""
import argparse
import random

LANES = 32


class MBarrier:
    """An mbarrier expecting `count` arrivals per phase."""

    def __init__(self, count):
        self.count, self.arrived, self.phase = count, 0, 0

    def arrive(self, threads):
        self.arrived += threads
        assert self.arrived <= self.count, "more arrivals than the phase expects"
        if self.arrived == self.count:
            self.arrived, self.phase = 0, self.phase + 1

    def completed(self, parity):
        """mbarrier.try_wait.parity: true once the phase with this parity has completed."""
        return self.phase % 2 != parity


def warp_program(tiles):
    """The barrier operations of one warp, in the kernel's order."""
    ops = []
    if tiles == 0:
        return ops
    ops += [("fill", "K", 0), ("fill", "V", 0)]
    if tiles > 1:
        ops += [("fill", "K", 1), ("fill", "V", 1)]
    ops.append(("wait_full", "Q", 0, 0))
    for t in range(-1, tiles):
        if t >= 0:
            ops += [("wait_full", "V", t % 2, (t // 2) & 1), ("read_begin", "V", t), ("read_end", "V", t),
                    ("arrive_empty", "V", t % 2)]
        if t + 1 < tiles:
            s = t + 1
            ops += [("wait_full", "K", s % 2, (s // 2) & 1), ("read_begin", "K", s), ("read_end", "K", s),
                    ("arrive_empty", "K", s % 2)]
        if t >= 0 and t + 2 < tiles:
            ops += [("wait_empty", "V", t % 2, (t // 2) & 1), ("fill", "V", t + 2)]
        if t + 3 < tiles:
            ops += [("wait_empty", "K", (t + 1) % 2, ((t + 1) // 2) & 1), ("fill", "K", t + 3)]
    return ops


def simulate(tiles, warps, seed):
    """'ok', or what went wrong."""
    rng = random.Random(seed)
    threads = warps * LANES
    full = {key: MBarrier(threads) for key in [("Q", 0), ("K", 0), ("K", 1), ("V", 0), ("V", 1)]}
    empty = {key: MBarrier(threads) for key in [("K", 0), ("K", 1), ("V", 0), ("V", 1)]}
    # The tile each warp's share of a buffer holds (every warp copies part of every tile).
    content = {}
    in_flight = [(("Q", 0), None, w) for w in range(warps)] if tiles > 0 else []
    programs = [warp_program(tiles) for _ in range(warps)]
    position = [0] * warps
    while any(position[w] < len(programs[w]) for w in range(warps)) or in_flight:
        agents = [w for w in range(warps) if position[w] < len(programs[w])] + (["copy"] if in_flight else [])
        rng.shuffle(agents)
        for agent in agents:
            if agent == "copy":
                key, tile, warp = in_flight.pop(rng.randrange(len(in_flight)))
                content[(key, warp)] = tile
                full[key].arrive(LANES)
                break
            op = programs[agent][position[agent]]
            kind, tensor = op[0], op[1]
            if kind == "fill":
                in_flight.append(((tensor, op[2] % 2), op[2], agent))
            elif kind in ("wait_full", "wait_empty"):
                barrier = (full if kind == "wait_full" else empty)[(tensor, op[2])]
                if not barrier.completed(op[3]):
                    continue
            elif kind in ("read_begin", "read_end"):
                tile = op[2]
                for warp in range(warps):
                    if content.get(((tensor, tile % 2), warp)) != tile:
                        return f"warp {agent} reads {tensor} tile {tile} ({kind}) but warp {warp}'s rows hold " \
                               f"{content.get(((tensor, tile % 2), warp))}"
            elif kind == "arrive_empty":
                empty[(tensor, op[2])].arrive(LANES)
            position[agent] += 1
            break
        else:
            return f"deadlock at {position}"
    return "ok"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warps", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=300)
    args = parser.parse_args()
    failures = 0
    for tiles in range(13):
        for seed in range(args.seeds):
            result = simulate(tiles, args.warps, seed)
            if result != "ok":
                print(f"{tiles} tiles, seed {seed}: {result}")
                failures += 1
                break
    print(f"failures: {failures}")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
