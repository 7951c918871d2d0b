package sim

// Event kinds.
const (
	evJoin     = iota // a: agent starts its pull
	evAnnounce        // a: agent announces to the tracker
	evConnect         // a dialled b: the handshake is done
	evStart           // a: transfer's first byte (after the request latency)
	evDone            // a: transfer finishes
	evAvail           // a: piece a arrived at a cold origin
	evRefill          // the origin's retry timer (second copies)
	evKill            // a: agent killed (churn)
	evHaves           // a's lazy Haves to b are due (the shoal engine)
	evRedial          // a may dial b again (the shoal engine retries a refused dial)
	evTick            // a's once-a-second tick (the shoal engine)
	evLost            // a: piece a, lost with its holder, may be handed out again
)

type event struct {
	t    float64
	seq  uint64 // ties in time run in scheduling order: deterministic
	kind uint8
	a, b int32
	ver  uint32
}

// eventHeap is a binary min-heap on (t, seq). A transfer has at most one
// completion (evDone) in it, found through done and moved in place when
// the transfer's rate changes: rates change at most events, and a heap
// that kept every superseded completion would pop mostly stale ones.
type eventHeap struct {
	ev   []event
	done []int32 // per transfer: index of its completion in ev, -1 if none
}

func (h *eventHeap) len() int { return len(h.ev) }

func (h *eventHeap) less(i, j int) bool {
	if h.ev[i].t != h.ev[j].t {
		return h.ev[i].t < h.ev[j].t
	}
	return h.ev[i].seq < h.ev[j].seq
}

func (h *eventHeap) swap(i, j int) {
	h.ev[i], h.ev[j] = h.ev[j], h.ev[i]
	h.track(i)
	h.track(j)
}

// track records where the event at i now sits if it is a completion.
func (h *eventHeap) track(i int) {
	if h.ev[i].kind == evDone {
		h.done[h.ev[i].a] = int32(i)
	}
}

func (h *eventHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h.swap(i, p)
		i = p
	}
}

func (h *eventHeap) down(i int) {
	n := len(h.ev)
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && h.less(l, m) {
			m = l
		}
		if r < n && h.less(r, m) {
			m = r
		}
		if m == i {
			return
		}
		h.swap(i, m)
		i = m
	}
}

func (h *eventHeap) push(e event) {
	h.ev = append(h.ev, e)
	h.track(len(h.ev) - 1)
	h.up(len(h.ev) - 1)
}

func (h *eventHeap) pop() event {
	top := h.ev[0]
	h.removeAt(0)
	return top
}

// removeAt takes the event at i out of the heap.
func (h *eventHeap) removeAt(i int) {
	if h.ev[i].kind == evDone {
		h.done[h.ev[i].a] = -1
	}
	n := len(h.ev) - 1
	if i != n {
		h.ev[i] = h.ev[n]
		h.track(i)
	}
	h.ev = h.ev[:n]
	if i < n {
		h.down(i)
		h.up(i)
	}
}

// addTransfer makes room for transfer id's completion.
func (h *eventHeap) addTransfer(id int32) {
	for int(id) >= len(h.done) {
		h.done = append(h.done, -1)
	}
}

// setDone schedules transfer id's completion at (t, seq), replacing the
// one it had.
func (h *eventHeap) setDone(id int32, t float64, seq uint64) {
	i := h.done[id]
	if i < 0 {
		h.push(event{t: t, seq: seq, kind: evDone, a: id})
		return
	}
	h.ev[i].t, h.ev[i].seq = t, seq
	h.down(int(i))
	h.up(int(h.done[id]))
}

// cancelDone drops transfer id's completion, if it has one.
func (h *eventHeap) cancelDone(id int32) {
	if i := h.done[id]; i >= 0 {
		h.removeAt(int(i))
	}
}
