package hashring

import (
	"fmt"
	"testing"
)

func TestPickIsStableAndOrderIndependent(t *testing.T) {
	a := New([]string{"o1", "o2", "o3"})
	b := New([]string{"o3", "o1", "o2", "o1"})
	for i := range 100 {
		k := fmt.Sprintf("sha256:%d", i)
		pa, pb := a.Pick(k, 0), b.Pick(k, 0)
		if fmt.Sprint(pa) != fmt.Sprint(pb) || len(pa) != 3 {
			t.Fatalf("key %s: %v vs %v", k, pa, pb)
		}
	}
}

func TestRemovingANodeMovesOnlyItsKeys(t *testing.T) {
	full := New([]string{"o1", "o2", "o3", "o4"})
	less := New([]string{"o1", "o2", "o3"})
	moved, owned := 0, map[string]int{}
	for i := range 4000 {
		k := fmt.Sprintf("k%d", i)
		f, l := full.Pick(k, 1)[0], less.Pick(k, 1)[0]
		owned[f]++
		if f != l {
			if f != "o4" {
				t.Fatalf("key %s moved from %s to %s though %s stayed", k, f, l, f)
			}
			moved++
		}
	}
	if moved != owned["o4"] {
		t.Fatalf("moved %d, o4 owned %d", moved, owned["o4"])
	}
	for n, c := range owned { // a fair spread: each node within 20% of 1000
		if c < 800 || c > 1200 {
			t.Errorf("node %s owns %d of 4000 keys", n, c)
		}
	}
}

func TestPickLimits(t *testing.T) {
	r := New([]string{"a", "b"})
	if got := r.Pick("x", 1); len(got) != 1 {
		t.Fatalf("Pick(1) = %v", got)
	}
	if got := New(nil).Pick("x", 3); len(got) != 0 {
		t.Fatalf("empty ring gave %v", got)
	}
}
