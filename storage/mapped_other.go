//go:build !linux

package storage

// releaseMapped does nothing where the kernel offers no non-destructive advice to reclaim
// mapped pages: ProfileSensor's other settings still apply.
func (s *Store) releaseMapped() error { return nil }

// releaseOver does nothing either (see releaseMapped).
func (s *Store) releaseOver(*uint64, uint64) error { return nil }

// fileResident is unknown: 0.
func fileResident() (uint64, error) { return 0, nil }
