package sim

import (
	"context"
	"fmt"
)

// RealRow is a measured `shoal bench swarm` row the model is checked
// against (one origin, U = R unless OriginRate is set).
type RealRow struct {
	Name       string
	Agents     int
	BlobBytes  int64
	PieceBytes int64 // as measured (the origin's rule of the day, or --piece-size)
	Rate       float64
	OriginRate float64 // 0: Rate
	Warm       bool
	P50, Max   float64 // measured, over T_min
	// Code is the agents' engine and request window when the row was
	// measured: "engine+unsnub" (the next, and a snubbed peer is asked
	// again while its downloader is underfed: 2026-12-06, midday, on),
	// "engine+slowerlast" (the next, and the upload turns serve
	// peers that told an upload cap under half the uploader's last:
	// 2026-12-06 on), "engine+underfed" (Shoal's own engine with upload turns,
	// 128 KiB blocks and the underfed rule: 2026-12-05 on),
	// "engine+128KiB" (the same without the underfed rule: 2026-12-04,
	// afternoon, to 2026-12-05), "engine+turns" (the same
	// with 64 KiB blocks, the peer holding the least first), "engine" (the engine
	// before, its uploads in request order; p2p.engine = "shoal", the
	// default since 2026-12-03), "requests_per_peer" (anacrolix/torrent
	// with the current rule: 20 ms of the download cap, at least one
	// 64 KiB block) or "library" (anacrolix/torrent with its own window,
	// ramping to 250+ blocks per peer; duplicate blocks 5 % at N =
	// 64-128). The model runs the engine's rows on its shoal engine (in
	// the row's upload order), the others on its library, with the
	// current request window.
	Code string
	// Current rows are held to +-0.05 (the guard test and the table);
	// the others are reported only: older code, or a CPU-bound run.
	Current bool
	Source  string
	// Uneven, Late and Churn as bench swarm's scenarios (then P50 and Max
	// are over each agent's own bound); SlowConns the uneven agents'
	// conns_per_torrent (--slow-conns; 0: as the others').
	Uneven, Late, Churn float64
	SlowConns           int
}

const (
	codeUnsnub     = "engine+unsnub"
	codeSlowerLast = "engine+slowerlast"
	codeUnderfed   = "engine+underfed"
	codeBlocks     = "engine+128KiB"
	codeTurns      = "engine+turns"
	codeEngine     = "engine"
	codeRPP        = "requests_per_peer"
	codeLib        = "library"
)

// unsnubDir holds the engine's runs with snubs lifted while underfed and
// the build before (2026-12-06, "-after-" and "-before-"); underfedDir the
// engine's runs with the underfed rule and the build before (2026-12-05),
// underfedBaseDir the default build's runs of the day after (the "-base-"
// runs of a lever not kept).
const (
	unsnubDir       = "bench/scale/levers/engine/unsnub/"
	slowerLastDir   = "bench/scale/levers/engine/slowerlast/"
	underfedDir     = "bench/scale/levers/engine/underfed/"
	underfedBaseDir = "bench/scale/levers/engine/underfedconns/"
)

// idleFirstDir holds the engine's runs with the origin's new pieces going
// first to peers fetching nothing from it and second copies one at a time
// (2026-12-05; "-final-"), the rules on their way there ("-idle-": the
// first without the second, "-reveal1-": one piece per peer at a time) and
// the build before ("-base-"), interleaved.
const idleFirstDir = "bench/scale/levers/engine/idlefirst/"

// stallDir holds the engine's runs with the stall time scaled by the
// download cap and the build before.
const stallDir = "bench/scale/levers/engine/stall/"

// maxStallDir holds the engine's runs with the stall time capped at 3 min
// and the build before (30 s).
const maxStallDir = "bench/scale/levers/engine/maxstall/"

// blocksDir holds the engine's runs with 128 KiB blocks and the build before.
const blocksDir = "bench/scale/levers/engine/block128/"

// turnsDir holds the engine's runs with upload turns and the build before.
const turnsDir = "bench/scale/levers/engine/turns/"

// beforeMessages is the engine's scale set published until fewer messages a
// piece (2026-12-03, night), where the engine's default rows come from.
const beforeMessages = "bench/scale/levers/engine/scale-before-messages.json"

// RealRows are every real row available: the engine's rows of 2026-12-03
// (bench/scale/levers/engine),
// bench/results.json and
// docs/benchmarks.md (N = 8, 16, 32), bench/scale (the scale set of
// 2026-12-03 and of 2026-12-02) and the lead's runs of 2026-12-02 and 03
// (N = 32, 64, 128 at 256, 64 and 32 KiB pieces, with requests_per_peer,
// N = 256 at 0.125 MB/s, uneven links with fewer connections), and the
// older rows of issue 14's table.
var RealRows = []RealRow{
	// A snubbed peer asked again while its downloader is underfed
	// (commit 80192d4, 2026-12-06; mean of the runs; the warm row's on a
	// build that also traced each agent).
	{"N=128 16MiB 0.5MB/s warm (unsnub, 2026-12-06)", 128, 16 << 20, 32 << 10, 0.5e6, 0, true, 1.053, 1.060, codeUnsnub, true, unsnubDir + "n128x16-warm-after-traced-{1..6}.json", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s cold (unsnub, 2026-12-06)", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.048, 1.056, codeUnsnub, true, unsnubDir + "cold128-after-{1,2}.json", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s cold (unsnub, 2026-12-06)", 256, 16 << 20, 32 << 10, 0.125e6, 0, false, 1.054, 1.065, codeUnsnub, true, unsnubDir + "cold256-after-{1,2}.json", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4 (over own bound) (unsnub, 2026-12-06)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.055, 1.147, codeUnsnub, true, unsnubDir + "uneven64-after-{1,2,3}.json", 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 10% churn (over own bound) (unsnub, 2026-12-06)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.052, 1.073, codeUnsnub, true, unsnubDir + "churn64-after-{1,2}.json", 0, 0, 0.1, 0},
	// The upload turns serving peers that told an upload cap under half
	// the uploader's last (commit 247dd5e, 2026-12-06; mean of the runs).
	{"N=64 16MiB 1MB/s, 1/4 at R/4 (over own bound) (slower last, 2026-12-06)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.061, 1.124, codeSlowerLast, true, slowerLastDir + "uneven-cold-u1-after-{1..4}.json", 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s warm, 1/4 at R/4 (over own bound) (slower last, 2026-12-06)", 64, 16 << 20, 32 << 10, 1e6, 0, true, 1.068, 1.096, codeSlowerLast, true, slowerLastDir + "uneven-warm-u1-after-{1,2}.json", 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s, origin 10MB/s, 1/4 at R/4 (over own bound) (slower last, 2026-12-06)", 64, 16 << 20, 32 << 10, 1e6, 10e6, false, 1.019, 1.139, codeSlowerLast, true, slowerLastDir + "uneven-cold-u10-after-{1,2}.json", 0.25, 0, 0, 0},
	// Shoal's own engine with the underfed rule (commit a9a8ba4, 2026-12-05):
	// that day's runs of it, with the default build's runs interleaved with
	// a lever tried and not kept (mean of the runs).
	{"N=64 16MiB 1MB/s cold (underfed, 2026-12-05)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.048, 1.059, codeUnderfed, true, underfedBaseDir + "even-base-{1,2}.json, " + underfedDir + "even64-final-1.json", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s cold (underfed, 2026-12-05)", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.057, 1.079, codeUnderfed, true, underfedBaseDir + "n128-base-{1,2}.json", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s cold (underfed, 2026-12-05)", 256, 16 << 20, 32 << 10, 0.125e6, 0, false, 1.068, 1.116, codeUnderfed, true, underfedBaseDir + "n256-base-{1,2,3}.json", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4 (over own bound) (underfed, 2026-12-05)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.107, 1.195, codeUnderfed, false, underfedBaseDir + "uneven-cold-u1-base-{1..7}.json, " + underfedDir + "uneven-final-{1,2}.json", 0.25, 0, 0, 0},
	// The origin's new pieces to peers fetching nothing first, its second
	// copies one at a time (2026-12-05, later; mean of 6 runs). The row
	// above is the origin before: the model's origin is this one now.
	{"N=64 16MiB 1MB/s, 1/4 at R/4 (over own bound) (idle first, 2026-12-05)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.084, 1.146, codeUnderfed, true, idleFirstDir + "uneven-final-{1..6}.json", 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s, origin 10MB/s, 1/4 at R/4 (over own bound) (underfed, 2026-12-05)", 64, 16 << 20, 32 << 10, 1e6, 10e6, false, 1.020, 1.195, codeUnderfed, true, underfedBaseDir + "uneven-cold-u10-base-{1,2}.json, " + underfedDir + "unevenu10-final-1.json", 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s, origin 10MB/s warm, 1/4 at R/4 (over own bound) (underfed, 2026-12-05)", 64, 16 << 20, 32 << 10, 1e6, 10e6, true, 1.027, 1.205, codeUnderfed, true, underfedBaseDir + "uneven-warm-u10-base-{1..15}.json, " + underfedDir + "unevenu10w-final-{3..6}.json", 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 late (over own bound) (underfed, 2026-12-05)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.061, 1.109, codeUnderfed, true, underfedDir + "late-final-1.json", 0, 0.25, 0, 0},
	{"N=64 16MiB 1MB/s, 10% churn (over own bound) (underfed, 2026-12-05)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.055, 1.117, codeUnderfed, true, underfedDir + "churn-final-1.json", 0, 0, 0.1, 0},

	// Shoal's own engine with the stall time up to 3 min (maxStall =
	// idleTimeout), runs interleaved with the build before. The slow link
	// is where the limiters' burst counts (5 s of a 12.8 KB/s link): the
	// model without it took 1.238x, first byte 26 s (the swarm's 1.9 s).
	{"N=256 4MiB 12.8KB/s cold (max stall 3 min, 2026-12-04)", 256, 4 << 20, 32 << 10, 12.8e3, 0, false, 1.125, 1.182, codeBlocks, true, maxStallDir + "n256-4MiB-12k8-B-{1,2}.json", 0, 0, 0, 0},
	{"N=256 8MiB 64KB/s cold (max stall 3 min, 2026-12-04)", 256, 8 << 20, 32 << 10, 64e3, 0, false, 1.109, 1.165, codeBlocks, true, maxStallDir + "n256-8MiB-64KBs-B-1.json, n256-8MiB-64KBs-p2-B-{1,2}.json", 0, 0, 0, 0},

	// Shoal's own engine with the stall time scaled by the download cap
	// (commit 6c64e03), runs interleaved with the build before (mean of
	// the runs): bench/scale/levers/engine/stall.
	{"N=256 8MiB 64KB/s cold (stall, 2026-12-04)", 256, 8 << 20, 32 << 10, 64e3, 0, false, 1.098, 1.181, codeBlocks, true, stallDir + "n256-8MiB-64KBs-B-{1,2,3}.json", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s cold (stall, 2026-12-04)", 256, 16 << 20, 32 << 10, 0.125e6, 0, false, 1.065, 1.109, codeBlocks, true, stallDir + "n256-16MiB-125KBs-B-1.json", 0, 0, 0, 0},

	// Shoal's own engine with 128 KiB blocks (commit 4c76ae5), one or two
	// runs each interleaved with the build before (mean of the runs):
	// bench/scale/levers/engine/block128.
	{"N=16 256MiB 12.5MB/s cold (128KiB blocks, 2026-12-04)", 16, 256 << 20, 512 << 10, 12.5e6, 0, false, 1.034, 1.038, codeBlocks, true, blocksDir + "n16std-B-{1,2}.json", 0, 0, 0, 0},
	{"N=64 64MiB 3.125MB/s cold (128KiB blocks, 2026-12-04)", 64, 64 << 20, 128 << 10, 3.125e6, 0, false, 1.065, 1.071, codeBlocks, true, blocksDir + "n64f64-B-{1,2}.json", 0, 0, 0, 0},
	{"N=128 64MiB 1.5625MB/s cold (128KiB blocks, 2026-12-04)", 128, 64 << 20, 128 << 10, 1.5625e6, 0, false, 1.066, 1.071, codeBlocks, true, blocksDir + "n128f64-B-{1,2}.json", 0, 0, 0, 0},
	{"N=256 64MiB 0.78125MB/s cold (128KiB blocks, 2026-12-04)", 256, 64 << 20, 128 << 10, 0.78125e6, 0, false, 1.074, 1.096, codeBlocks, true, blocksDir + "n256f64-B-2.json", 0, 0, 0, 0},

	// Shoal's own engine with upload turns (the peer holding the least
	// first; blocks cancelled while waiting are dropped), 2026-12-04,
	// commit e28f5b4 (N = 128: 6ce7491, before the cancel), one run each
	// interleaved with the build before: bench/scale/levers/engine/turns.
	{"N=64 16MiB 1MB/s cold (turns, 2026-12-04)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.049, 1.055, codeTurns, true, turnsDir + "n64-cold-turns-1.json", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s cold (turns, 2026-12-04)", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.058, 1.066, codeTurns, true, turnsDir + "n128-cold-turns-1.json", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s cold (turns, 2026-12-04)", 256, 16 << 20, 32 << 10, 0.125e6, 0, false, 1.064, 1.135, codeTurns, true, turnsDir + "n256-cold-cancel-turns-1.json", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4 (over own bound) (turns, 2026-12-04)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.111, 1.160, codeTurns, true, turnsDir + "uneven-n64-cancel-turns-{1,2}.json and a run logged only, mean of 3 (1.105, 1.099, 1.128)", 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 late (over own bound) (turns, 2026-12-04)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.062, 1.089, codeTurns, true, turnsDir + "late-n64-turns-1.json", 0, 0.25, 0, 0},
	{"N=64 16MiB 1MB/s, 10% churn (over own bound) (turns, 2026-12-04)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.055, 1.088, codeTurns, true, turnsDir + "churn-n64-turns-1.json", 0, 0, 0.1, 0},
	{"N=16 256MiB 12.5MB/s cold (turns, 2026-12-04)", 16, 256 << 20, 512 << 10, 12.5e6, 0, false, 1.041, 1.044, codeTurns, true, turnsDir + "std-n16-turns-1.json", 0, 0, 0, 0},

	// make bench-scale on the engine as the default (commit 98d0020), the
	// published set until fewer messages a piece (2026-12-03, night):
	// bench/scale/levers/engine/scale-before-messages.json.
	{"N=64 16MiB 1MB/s cold (engine default, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.076, 1.137, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s warm (engine default, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, true, 1.060, 1.085, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, origin 10MB/s cold (engine default, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 10e6, false, 1.017, 1.060, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, origin 10MB/s warm (engine default, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 10e6, true, 1.010, 1.024, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s cold (engine default, 2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.072, 1.086, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s warm (engine default, 2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 0, true, 1.076, 1.083, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s, origin 5MB/s cold (engine default, 2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 5e6, false, 1.023, 1.042, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s, origin 5MB/s warm (engine default, 2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 5e6, true, 1.018, 1.073, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s cold (engine default, 2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 0, false, 1.063, 1.116, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s warm (engine default, 2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 0, true, 1.076, 1.083, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s, origin 1.25MB/s cold (engine default, 2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 1.25e6, false, 1.008, 1.075, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s, origin 1.25MB/s warm (engine default, 2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 1.25e6, true, 1.011, 1.056, codeEngine, true, beforeMessages, 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4 (over own bound) (engine default, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.123, 1.305, codeEngine, true, beforeMessages, 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4, slow conns 3 (over own bound) (engine default, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.079, 1.296, codeEngine, true, beforeMessages, 0.25, 0, 0, 3},
	{"N=64 16MiB 1MB/s, 1/4 late (over own bound) (engine default, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.082, 1.104, codeEngine, true, beforeMessages, 0, 0.25, 0, 0},
	{"N=64 16MiB 1MB/s, 10% churn (over own bound) (engine default, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.122, 1.128, codeEngine, true, beforeMessages, 0, 0, 0.1, 0},

	// Shoal's own engine (p2p.engine = "shoal"), after lazy Haves (commit
	// cfa1baa): the scale set's rows and the standard set, one run each
	// (bench/scale/levers/engine/*-engine-lazyhaves.json).
	{"N=64 16MiB 1MB/s cold (engine, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.082, 1.162, codeEngine, true, "bench/scale/levers/engine/scale-n64-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s warm (engine, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, true, 1.059, 1.124, codeEngine, true, "bench/scale/levers/engine/scale-n64-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, origin 10MB/s cold (engine, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 10e6, false, 1.023, 1.053, codeEngine, true, "bench/scale/levers/engine/scale-n64-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, origin 10MB/s warm (engine, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 10e6, true, 1.018, 1.040, codeEngine, true, "bench/scale/levers/engine/scale-n64-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4 (over own bound) (engine, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.099, 1.449, codeEngine, true, "bench/scale/levers/engine/scale-n64-engine-lazyhaves.json", 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4, slow conns 3 (over own bound) (engine, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.089, 1.330, codeEngine, true, "bench/scale/levers/engine/scale-n64-engine-lazyhaves.json", 0.25, 0, 0, 3},
	{"N=64 16MiB 1MB/s, 1/4 late (over own bound) (engine, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.063, 1.121, codeEngine, true, "bench/scale/levers/engine/scale-n64-engine-lazyhaves.json", 0, 0.25, 0, 0},
	{"N=64 16MiB 1MB/s, 10% churn (over own bound) (engine, 2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.081, 1.121, codeEngine, true, "bench/scale/levers/engine/scale-n64-engine-lazyhaves.json", 0, 0, 0.1, 0},
	{"N=128 16MiB 0.5MB/s cold (engine, 2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.074, 1.086, codeEngine, true, "bench/scale/levers/engine/scale-n128-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s warm (engine, 2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 0, true, 1.077, 1.083, codeEngine, true, "bench/scale/levers/engine/scale-n128-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s, origin 5MB/s cold (engine, 2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 5e6, false, 1.017, 1.057, codeEngine, true, "bench/scale/levers/engine/scale-n128-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s, origin 5MB/s warm (engine, 2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 5e6, true, 1.020, 1.151, codeEngine, true, "bench/scale/levers/engine/scale-n128-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s cold (engine, 2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 0, false, 1.066, 1.113, codeEngine, true, "bench/scale/levers/engine/scale-n256-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s warm (engine, 2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 0, true, 1.072, 1.116, codeEngine, true, "bench/scale/levers/engine/scale-n256-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s, origin 1.25MB/s cold (engine, 2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 1.25e6, false, 1.008, 1.110, codeEngine, true, "bench/scale/levers/engine/scale-n256-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s, origin 1.25MB/s warm (engine, 2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 1.25e6, true, 1.010, 1.093, codeEngine, true, "bench/scale/levers/engine/scale-n256-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=8 256MiB 25MB/s cold (engine, 2026-12-03)", 8, 256 << 20, 512 << 10, 25e6, 0, false, 1.057, 1.057, codeEngine, true, "bench/scale/levers/engine/standard-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=16 256MiB 12.5MB/s cold (engine, 2026-12-03)", 16, 256 << 20, 512 << 10, 12.5e6, 0, false, 1.074, 1.089, codeEngine, true, "bench/scale/levers/engine/standard-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=32 256MiB 6.25MB/s cold (engine, 2026-12-03)", 32, 256 << 20, 512 << 10, 6.25e6, 0, false, 1.090, 1.092, codeEngine, true, "bench/scale/levers/engine/standard-engine-lazyhaves.json", 0, 0, 0, 0},
	{"N=16 1GiB 12.5MB/s cold (engine, 2026-12-03)", 16, 1024 << 20, 2048 << 10, 12.5e6, 0, false, 1.078, 1.097, codeEngine, true, "bench/scale/levers/engine/standard-engine-lazyhaves.json", 0, 0, 0, 0},

	// make bench-scale on commit 9d0b113 (the nudge; N = 256 at 0.125 MB/s), the library: bench/scale/library/scale.json.
	// The model has no nudge and needs none: its agent is done with its
	// last piece, and the nudge is what makes a real client's last byte
	// come then too (before it, with U = 10 R, the in-order prefix and the
	// client's stream caught up only at the end: 0.03-0.04 slower).
	{"N=64 16MiB 1MB/s cold (2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.084, 1.094, codeRPP, true, "bench/scale/library/scale.json (2026-12-03)", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s warm (2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, true, 1.081, 1.089, codeRPP, true, "bench/scale/library/scale.json (2026-12-03)", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, origin 10MB/s cold (2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 10e6, false, 1.044, 1.070, codeRPP, true, "bench/scale/library/scale.json (2026-12-03; with the nudge)", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, origin 10MB/s warm (2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 10e6, true, 1.056, 1.079, codeRPP, true, "bench/scale/library/scale.json (2026-12-03; with the nudge)", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s cold (2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.099, 1.115, codeRPP, true, "bench/scale/library/scale.json (2026-12-03)", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s warm (2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 0, true, 1.094, 1.107, codeRPP, true, "bench/scale/library/scale.json (2026-12-03)", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s, origin 5MB/s cold (2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 5e6, false, 1.049, 1.071, codeRPP, true, "bench/scale/library/scale.json (2026-12-03; with the nudge)", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s, origin 5MB/s warm (2026-12-03)", 128, 16 << 20, 32 << 10, 0.5e6, 5e6, true, 1.059, 1.077, codeRPP, true, "bench/scale/library/scale.json (2026-12-03; with the nudge)", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s cold (2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 0, false, 1.101, 1.120, codeRPP, true, "bench/scale/library/scale.json (2026-12-03)", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s warm (2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 0, true, 1.102, 1.113, codeRPP, true, "bench/scale/library/scale.json (2026-12-03)", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s, origin 1.25MB/s cold (2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 1.25e6, false, 1.032, 1.040, codeRPP, true, "bench/scale/library/scale.json (2026-12-03; with the nudge)", 0, 0, 0, 0},
	{"N=256 16MiB 0.125MB/s, origin 1.25MB/s warm (2026-12-03)", 256, 16 << 20, 32 << 10, 0.125e6, 1.25e6, true, 1.035, 1.053, codeRPP, true, "bench/scale/library/scale.json (2026-12-03; with the nudge)", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4 (over own bound) (2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.124, 1.533, codeRPP, true, "bench/scale/library/scale.json (2026-12-03)", 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4, slow conns 3 (over own bound) (2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.095, 1.193, codeRPP, true, "bench/scale/library/scale.json (2026-12-03)", 0.25, 0, 0, 3},
	{"N=64 16MiB 1MB/s, 1/4 late (over own bound) (2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.127, 1.221, codeRPP, true, "bench/scale/library/scale.json (2026-12-03; with the nudge)", 0, 0.25, 0, 0},
	{"N=64 16MiB 1MB/s, 10% churn (over own bound) (2026-12-03)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.121, 1.248, codeRPP, true, "bench/scale/library/scale.json (2026-12-03)", 0, 0, 0.1, 0},

	// make bench-scale on commit d1b5499 (32 KiB pieces, requests_per_peer; bench/scale/scale.json in git at that commit).
	{"N=64 16MiB 1MB/s cold", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.089, 1.115, codeRPP, true, "bench/scale/scale.json at d1b5499", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s warm", 64, 16 << 20, 32 << 10, 1e6, 0, true, 1.074, 1.081, codeRPP, true, "bench/scale/scale.json at d1b5499", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, origin 10MB/s cold", 64, 16 << 20, 32 << 10, 1e6, 10e6, false, 1.084, 1.092, codeRPP, true, "bench/scale/scale.json at d1b5499", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, origin 10MB/s warm", 64, 16 << 20, 32 << 10, 1e6, 10e6, true, 1.081, 1.169, codeRPP, true, "bench/scale/scale.json at d1b5499", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s cold", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.095, 1.107, codeRPP, true, "bench/scale/scale.json at d1b5499", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s warm", 128, 16 << 20, 32 << 10, 0.5e6, 0, true, 1.096, 1.107, codeRPP, true, "bench/scale/scale.json at d1b5499", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s, origin 5MB/s cold", 128, 16 << 20, 32 << 10, 0.5e6, 5e6, false, 1.109, 1.138, codeRPP, false, "bench/scale/scale.json at d1b5499 (CPU-bound)", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s, origin 5MB/s warm", 128, 16 << 20, 32 << 10, 0.5e6, 5e6, true, 1.100, 1.137, codeRPP, true, "bench/scale/scale.json at d1b5499", 0, 0, 0, 0},
	{"N=256 16MiB 0.25MB/s cold", 256, 16 << 20, 32 << 10, 0.25e6, 0, false, 1.125, 1.142, codeRPP, true, "bench/scale/scale.json at d1b5499", 0, 0, 0, 0},
	{"N=256 16MiB 0.25MB/s warm", 256, 16 << 20, 32 << 10, 0.25e6, 0, true, 1.129, 1.157, codeRPP, true, "bench/scale/scale.json at d1b5499", 0, 0, 0, 0},
	{"N=256 16MiB 0.25MB/s, origin 2.5MB/s cold", 256, 16 << 20, 32 << 10, 0.25e6, 2.5e6, false, 1.142, 1.183, codeRPP, false, "bench/scale/scale.json at d1b5499 (CPU-bound)", 0, 0, 0, 0},
	{"N=256 16MiB 0.25MB/s, origin 2.5MB/s warm", 256, 16 << 20, 32 << 10, 0.25e6, 2.5e6, true, 1.146, 1.196, codeRPP, false, "bench/scale/scale.json at d1b5499 (CPU-bound)", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4 (over own bound)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.120, 1.236, codeRPP, true, "bench/scale/scale.json at d1b5499", 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 late (over own bound)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.091, 1.125, codeRPP, true, "bench/scale/scale.json at d1b5499", 0, 0.25, 0, 0},
	{"N=64 16MiB 1MB/s, 10% churn (over own bound)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.099, 1.335, codeRPP, true, "bench/scale/scale.json at d1b5499", 0, 0, 0.1, 0},

	// The lead's runs of 2026-12-03 (commit 461d6c5): bench/scale/levers.
	{"N=256 16MiB 0.125MB/s cold", 256, 16 << 20, 32 << 10, 0.125e6, 0, false, 1.098, 1.107, codeRPP, true, "bench/scale/levers/n256-r0.125MBps.json", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4, conns 6 (over own bound)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.114, 1.332, codeRPP, true, "bench/scale/levers/uneven-n64-conns6-{a,b,c}.json, mean of 3 (1.113, 1.117, 1.112)", 0.25, 0, 0, 0},
	{"N=64 16MiB 1MB/s, 1/4 at R/4, slow conns 3 (over own bound)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.088, 1.192, codeRPP, true, "bench/scale/levers/uneven-n64-slowconns3-{a,b,c}.json, mean of 3 (1.088, 1.083, 1.093)", 0.25, 0, 0, 3},
	{"N=64 16MiB 1MB/s, 1/4 at R/4, slow conns 2 (over own bound)", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.108, 1.256, codeRPP, true, "bench/scale/levers/uneven-n64-slowconns2.json", 0.25, 0, 0, 2},

	{"N=128 16MiB 0.5MB/s 32KiB", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.099, 1.114, codeRPP, true, "2026-12-02, commit 16c4fca (requests_per_peer)", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s 32KiB", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.092, 1.099, codeRPP, true, "2026-12-02, commit 16c4fca (requests_per_peer)", 0, 0, 0, 0},
	{"N=32 64MiB 6.25MB/s 128KiB", 32, 64 << 20, 128 << 10, 6.25e6, 0, false, 1.091, 1.111, codeRPP, true, "2026-12-02, commit 16c4fca (CPU-bound: 1.78 cores)", 0, 0, 0, 0},

	{"N=128 16MiB 0.5MB/s 32KiB", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.126, 1.145, codeLib, true, "2026-12-02, commit f5542e3 (32 KiB pieces)", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s 32KiB", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.112, 1.120, codeLib, true, "2026-12-02, commit f5542e3 (32 KiB pieces)", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s 32KiB (--piece-size)", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.135, 1.147, codeLib, true, "2026-12-02 before f5542e3, mean of 3 runs (1.121, 1.133, 1.152)", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s 64KiB", 128, 16 << 20, 64 << 10, 0.5e6, 0, false, 1.197, 1.214, codeLib, true, "2026-12-02 before f5542e3 (--piece-size)", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s 256KiB", 128, 16 << 20, 256 << 10, 0.5e6, 0, false, 1.474, 1.514, codeLib, true, "bench/scale/n128-f16MiB-r0.5MBps.json", 0, 0, 0, 0},
	{"N=64 16MiB 1MB/s 256KiB", 64, 16 << 20, 256 << 10, 1e6, 0, false, 1.414, 1.466, codeLib, true, "bench/scale/n64-f16MiB-r1MBps.json", 0, 0, 0, 0},
	{"N=32 64MiB 6.25MB/s 256KiB", 32, 64 << 20, 256 << 10, 6.25e6, 0, false, 1.162, 1.177, codeLib, true, "bench/scale/n32-f64MiB-r6.25MBps.json", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s 16KiB", 128, 16 << 20, 16 << 10, 0.5e6, 0, false, 1.141, 1.176, codeLib, false, "2026-12-02 (--piece-size; CPU-bound: 1.92 cores)", 0, 0, 0, 0},

	{"N=8 256MiB 25MB/s cold", 8, 256 << 20, 512 << 10, 25e6, 0, false, 1.053, 1.053, codeLib, true, "bench/results.json 2026-11-24", 0, 0, 0, 0},
	{"N=16 256MiB 12.5MB/s cold", 16, 256 << 20, 512 << 10, 12.5e6, 0, false, 1.090, 1.172, codeLib, true, "bench/results.json 2026-11-24", 0, 0, 0, 0},
	{"N=32 256MiB 6.25MB/s cold", 32, 256 << 20, 512 << 10, 6.25e6, 0, false, 1.101, 1.111, codeLib, true, "bench/results.json 2026-11-24", 0, 0, 0, 0},
	{"N=16 1GiB 12.5MB/s cold", 16, 1 << 30, 2 << 20, 12.5e6, 0, false, 1.092, 1.097, codeLib, true, "bench/results.json 2026-11-24", 0, 0, 0, 0},
	{"N=8 256MiB 25MB/s warm", 8, 256 << 20, 512 << 10, 25e6, 0, true, 1.04, 1.09, codeLib, true, "docs/benchmarks.md warm table", 0, 0, 0, 0},
	{"N=16 256MiB 12.5MB/s warm", 16, 256 << 20, 512 << 10, 12.5e6, 0, true, 1.06, 1.07, codeLib, true, "docs/benchmarks.md warm table", 0, 0, 0, 0},
	{"N=32 256MiB 6.25MB/s warm", 32, 256 << 20, 512 << 10, 6.25e6, 0, true, 1.10, 1.12, codeLib, true, "docs/benchmarks.md warm table", 0, 0, 0, 0},
	{"N=8 256MiB 25MB/s cold (2026-12-02)", 8, 256 << 20, 512 << 10, 25e6, 0, false, 1.048, 1.050, codeLib, true, "docs/benchmarks.md, after the architecture step", 0, 0, 0, 0},
	{"N=16 256MiB 12.5MB/s cold (2026-12-02)", 16, 256 << 20, 512 << 10, 12.5e6, 0, false, 1.065, 1.085, codeLib, true, "docs/benchmarks.md, after the architecture step (mean of 2)", 0, 0, 0, 0},
	{"N=32 256MiB 6.25MB/s cold (2026-12-02)", 32, 256 << 20, 512 << 10, 6.25e6, 0, false, 1.081, 1.093, codeLib, true, "docs/benchmarks.md, after the architecture step", 0, 0, 0, 0},

	{"N=64 64MiB 3.125MB/s 256KiB (issue 14)", 64, 64 << 20, 256 << 10, 3.125e6, 0, false, 1.43, 1.45, codeLib, false, "issue 14 table, older code", 0, 0, 0, 0},
	{"N=128 64MiB 1.5625MB/s 256KiB (issue 14)", 128, 64 << 20, 256 << 10, 1.5625e6, 0, false, 1.63, 1.72, codeLib, false, "issue 14 table, older code", 0, 0, 0, 0},
	{"N=128 16MiB 0.5MB/s, origin 5MB/s 256KiB (issue 14)", 128, 16 << 20, 256 << 10, 0.5e6, 5e6, false, 1.31, 1.46, codeLib, false, "issue 14 table, older code", 0, 0, 0, 0},
}

// setChunk sets the block of a row measured before the engine's blocks grew
// to 128 KiB, unless the caller chose one.
func setChunk(c *Config, b int64) {
	if c.ChunkBytes == 0 {
		c.ChunkBytes = b
	}
}

// Calibration is one real row against the model.
type Calibration struct {
	Row            RealRow `json:"row"`
	SimP50, SimMax float64 // mean over the seeds
	Diff           float64 // SimP50 - Row.P50
}

// Calibrate runs every real row with the policies of base (its Agents,
// BlobBytes, PieceBytes, rates and Engine are replaced by the row's; the
// fields base leaves at zero are then calibrated for that engine),
// averaging seeds runs.
func Calibrate(ctx context.Context, base Config, rows []RealRow, seeds int) ([]Calibration, error) {
	out := make([]Calibration, 0, len(rows))
	for _, r := range rows {
		c := base
		c.Agents, c.BlobBytes, c.Rate, c.OriginRate, c.UpstreamRate, c.Warm = r.Agents, r.BlobBytes, r.Rate, r.OriginRate, 0, r.Warm
		c.PieceBytes = r.PieceBytes
		c.Uneven, c.Late, c.Churn, c.SlowConns = r.Uneven, r.Late, r.Churn, r.SlowConns
		c.Engine = EngineLibrary
		// Rows before the slower-last rule (every row measured with equal
		// links runs the same either way), and before the unsnub rule.
		c.NoSlowerLast = r.Code != codeSlowerLast && r.Code != codeUnsnub
		c.KeepSnubs = r.Code != codeUnsnub
		switch r.Code {
		case codeUnsnub, codeSlowerLast:
			c.Engine, c.UploadOrder = EngineShoal, UploadBehind
		case codeUnderfed:
			c.Engine, c.UploadOrder = EngineShoal, UploadBehind
		case codeBlocks:
			c.Engine, c.UploadOrder, c.NoUnderfed = EngineShoal, UploadBehind, true
		case codeTurns:
			c.Engine, c.UploadOrder, c.NoUnderfed = EngineShoal, UploadBehind, true
			setChunk(&c, 64<<10)
		case codeEngine:
			c.Engine, c.UploadOrder, c.NoUnderfed = EngineShoal, UploadRequest, true
			setChunk(&c, 64<<10)
		}
		c = c.Calibrated()
		scenario := r.Uneven > 0 || r.Late > 0 || r.Churn > 0
		var p50, mx float64
		for k := range seeds {
			c.Seed = base.Seed + uint64(k)
			res, err := Run(ctx, c)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", r.Name, err)
			}
			if scenario {
				p50 += res.P50OverBound
				mx += res.MaxOverBound
			} else {
				p50 += res.P50OverTMin
				mx += res.MaxOverTMin
			}
		}
		p50, mx = p50/float64(seeds), mx/float64(seeds)
		out = append(out, Calibration{Row: r, SimP50: p50, SimMax: mx, Diff: p50 - r.P50})
	}
	return out, nil
}
