package controlevent

// Hooks for the external tests and benchmarks: the two decoders on their
// own.
var (
	DecodeSlow = decodeSlow
	DecodeFast = decodeFast
)
