//go:build !linux

package storage

// releaseMapped does nothing where the kernel offers no non-destructive advice to reclaim
// mapped pages: ProfileSensor's other settings still apply.
func (s *Store) releaseMapped() error { return nil }
