package controlevent

// Hooks for the external tests and benchmarks: the reference encoding/json
// paths and the fast decoder on its own.
var (
	MarshalJSON = marshalJSON
	DecodeJSON  = decodeJSON
	DecodeFast  = decodeFast
)
