package filesource

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/controlfeed/controlfeed/controlevent"
)

// maxPosition is the highest usable position: consumers record positions in
// signed 64-bit integers (SQLite's INTEGER), so anything above cannot be
// applied, skipped or stored as a cursor.
const maxPosition = math.MaxInt64

// badFilePosition determines where a file that is not a valid event sits in
// the feed, so that a reader can halt there instead of stopping the whole
// feed: the control_version read from the content if it can be read (even
// from a truncated or otherwise invalid object), else the number in a name
// made of digits only (the Sink's "%020d.json"), else 0 for "unknown". It
// also returns the file's event_id if one can be read and is a valid id, for
// naming the position in a halt.
func badFilePosition(name string, b []byte) (pos uint64, eventID string) {
	cv, id := scanHeader(b)
	if id != "" && (controlevent.Event{EventID: id, Type: "x", ControlVersion: 1}).Validate() != nil {
		id = ""
	}
	if cv == 0 {
		cv = nameHint(name)
	}
	if cv > maxPosition {
		cv = 0
	}
	return cv, id
}

// scanHeader reads the top-level "control_version" and "event_id" members
// of a JSON object for as long as the input is well-formed. It is lenient
// where controlevent.Decode is strict (it matches names case-insensitively,
// lets the last of duplicates win and null leave the value as it was, the
// way encoding/json reads them): for a file that is not a valid event, any
// position it can find is a better place to halt than none. For a valid
// event it finds what Decode does (FuzzBadFilePosition checks it). It stops at the first syntax error and returns
// what it found by then (0 and "" for members not found or of the wrong
// kind).
func scanHeader(b []byte) (cv uint64, id string) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0, ""
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return cv, id
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return cv, id
		}
		if string(raw) == "null" {
			continue
		}
		switch {
		case strings.EqualFold(key, "control_version"):
			cv = 0
			if v, err := strconv.ParseUint(string(raw), 10, 64); err == nil {
				cv = v
			}
		case strings.EqualFold(key, "event_id"):
			id = ""
			var s string
			if json.Unmarshal(raw, &s) == nil {
				id = s
			}
		}
	}
	return cv, id
}

// nameHint returns the number of a file name made of decimal digits and
// ".json" ("00000000000000000042.json" -> 42), or 0.
func nameHint(name string) uint64 {
	digits, ok := strings.CutSuffix(name, ".json")
	if !ok || digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0
	}
	v, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0
	}
	return v
}
