package sim

// Event kinds.
const (
	evJoin     = iota // a: agent starts its pull
	evAnnounce        // a: agent announces to the tracker
	evConnect         // a dialled b: the handshake is done
	evStart           // a: transfer's first byte (after the request latency)
	evDone            // a: transfer finishes (ver must match)
	evAvail           // a: piece a arrived at a cold origin
	evRefill          // the origin's retry timer (second copies)
	evKill            // a: agent killed (churn)
)

type event struct {
	t    float64
	seq  uint64 // ties in time run in scheduling order: deterministic
	kind uint8
	a, b int32
	ver  uint32
}

// eventHeap is a binary min-heap on (t, seq).
type eventHeap []event

func (h eventHeap) less(i, j int) bool {
	if h[i].t != h[j].t {
		return h[i].t < h[j].t
	}
	return h[i].seq < h[j].seq
}

func (h *eventHeap) push(e event) {
	*h = append(*h, e)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *eventHeap) pop() event {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && s.less(l, m) {
			m = l
		}
		if r < n && s.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}
