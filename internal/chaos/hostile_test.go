package chaos

import (
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
)

// TestLastPair: the hostile broker drops or swaps only the producer's last
// two events, and only when both are fresh, consecutive in the chain and in
// stream order; anything else in the tail is left alone.
func TestLastPair(t *testing.T) {
	m := func(seq, link uint64, fresh bool) tailMsg {
		return tailMsg{seq: seq, link: link, fresh: fresh, ev: controlevent.Event{EventID: "e"}}
	}
	cases := []struct {
		name string
		tail []tailMsg
		a, b int
		ok   bool
	}{
		{"TwoFresh", []tailMsg{m(10, 7, true), m(11, 8, true)}, 0, 1, true},
		{"LastTwoOfThree", []tailMsg{m(10, 7, true), m(11, 8, true), m(12, 9, true)}, 1, 2, true},
		{"UnsignedBetween", []tailMsg{m(10, 7, true), m(11, 0, false), m(12, 8, true)}, 0, 2, true},
		{"DuplicateAtTheEnd", []tailMsg{m(10, 7, true), m(11, 8, true), m(12, 3, false)}, 0, 1, true},
		{"One", []tailMsg{m(10, 7, true)}, 0, 0, false},
		{"None", nil, 0, 0, false},
		{"NotConsecutive", []tailMsg{m(10, 7, true), m(11, 9, true)}, 0, 0, false},
		{"FirstNotFresh", []tailMsg{m(10, 7, false), m(11, 8, true)}, 0, 0, false},
		{"SecondNotFresh", []tailMsg{m(10, 7, true), m(11, 8, false)}, 0, 0, false},
		{"OutOfStreamOrder", []tailMsg{m(10, 8, true), m(11, 7, true)}, 0, 0, false},
		{"SameLinkTwice", []tailMsg{m(10, 8, true), m(11, 8, true)}, 0, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, b, ok := lastPair(c.tail)
			if ok != c.ok || ok && (a != c.a || b != c.b) {
				t.Fatalf("lastPair = %d, %d, %v; want %d, %d, %v", a, b, ok, c.a, c.b, c.ok)
			}
		})
	}
}
