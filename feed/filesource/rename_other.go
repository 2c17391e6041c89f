//go:build !linux

package filesource

// renameNoReplace renames oldpath to newpath, refusing to replace an existing
// newpath (checked first; safe among writers holding the lock).
func renameNoReplace(oldpath, newpath string) error {
	return renameChecked(oldpath, newpath)
}
